"""Tokenizer parity and encode throughput: strata's C++ tokenizer against the reference
libraries on the same text (Debian's fortunes plus X11's UTF-8 Compose table, over 1 MB),
in one run, side by side:
  - byte-level BPE (tokenizer.json) against Hugging Face `tokenizers`: the committed
    fixtures and larger tokenizers trained here in the same styles (GPT-2, Llama-3, Qwen2);
  - SentencePiece (tokenizer.model) against the `sentencepiece` library: the committed
    fixture spm.model and larger BPE and unigram models trained here the same way.
strata's side is `strata tokenize --time` (one thread): BPE on the whole text as one
string; SentencePiece per 4 KB document (and once as one string, for the record).
Run by hand, never by the tests; exit status 1 on any mismatch:
    /work/venv-tok/bin/python tools/hf/check_tokenizer.py --strata build/tools/strata
    (any venv with `pip install tokenizers sentencepiece` does)
"""
import argparse, glob, io, os, shutil, subprocess, sys, tempfile, time
os.environ["TOKENIZERS_PARALLELISM"] = "false"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tokenizer_fixtures as fx
import make_spm_fixture as spm_fx

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "tokenizers")


def text():
    parts = list(fx.corpus())
    for path in sorted(glob.glob("/usr/share/X11/locale/en_US.UTF-8/Compose")):
        parts.append(open(path, encoding="utf-8", errors="replace", newline="").read())
    return "".join(parts)


def documents(sample):
    """The text cut after the first newline past every 4 KB: the reference libraries' usual input."""
    docs, at = [], 0
    while at < len(sample):
        end = sample.find("\n", at + 4096)
        end = len(sample) if end < 0 else end + 1
        docs.append(sample[at:end])
        at = end
    return docs


def seconds(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bpe_tokenizers(vocab):
    """(row name, vocab, tokenizers.Tokenizer, file suffix) for the BPE rows."""
    from tokenizers import trainers, pre_tokenizers
    for style in ("gpt2", "llama3", "qwen2"):
        yield style, 700, fx.build(style)
        tok = fx.build(style)  # same pipeline, retrained at a realistic size
        trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[t.content for t in tok.get_added_tokens_decoder().values()],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(fx.corpus(), trainer)
        yield style, vocab, tok


def spm_models(vocab):
    """(row name, vocab, serialized model) for the SentencePiece rows: the committed fixture,
    then BPE and unigram models trained here with the fixture's options (Llama-style:
    byte fallback, identity normalizer, split digits)."""
    import sentencepiece as spm
    with open(os.path.join(FIXTURES, "spm.model"), "rb") as f:
        yield "spm bpe (fixture)", 1000, f.read()
    for kind in ("bpe", "unigram"):
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=spm_fx.sentences(), model_writer=model, model_type=kind, vocab_size=vocab,
            byte_fallback=True, character_coverage=0.9995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            num_threads=1, minloglevel=2, normalization_rule_name="identity",
            remove_extra_whitespaces=False, split_digits=True)
        yield f"spm {kind}", vocab, model.getvalue()


def strata_encode(strata, tokenizer_file, text_file):
    r = subprocess.run([strata, "tokenize", "--tokenizer", tokenizer_file, "--time", text_file],
                       capture_output=True, text=True, check=True)
    return list(map(int, r.stdout.split())), float(r.stderr.split(" in ")[1].split(" s")[0])


def row(name, vocab, ref, ours, mb, ours_s, one_s, docs_s):
    bad = sum(x != y for x, y in zip(ref, ours)) + abs(len(ref) - len(ours))
    best = min(one_s, docs_s)
    print(f"| {name} | {vocab} | {len(ref)} | {bad} | {mb / ours_s:.2f} | {mb / one_s:.2f} | {mb / docs_s:.2f} | "
          f"{best / ours_s:.2f}x |", flush=True)
    return bad


def spm_table(a, sample, docs, mb, work):
    """SentencePiece rows, compared per 4 KB document (how sentencepiece is called: one
    sentence or document a call). A unigram model's Viterbi can end in a tie between
    segmentations of equal score, which libsentencepiece 0.1.97 (strata's, from Debian) and
    the PyPI release break differently: a differing document whose pieces score the same
    under the model is counted as a tie, not a mismatch."""
    import sentencepiece as spm
    files = []
    for i, d in enumerate(docs):
        files.append(os.path.join(work, f"doc{i:05d}.txt"))
        with open(files[-1], "w", encoding="utf-8", newline="") as f:
            f.write(d)
    print(f"\nSentencePiece, per document ({len(docs)} documents of about 4 KB, each one call on both sides; "
          f"MB/s: best of {a.repeat} alternating runs):")
    print("| tokenizer | vocab | tokens | documents differing | of them equal-score ties | strata MB/s | "
          "sentencepiece MB/s | strata / sentencepiece | one string: mismatches, strata MB/s, sentencepiece MB/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    bad = 0
    for name, vocab, model in spm_models(a.vocab):
        tfile = os.path.join(work, f"{name.replace(' ', '-').replace('(', '').replace(')', '')}-{vocab}.model")
        with open(tfile, "wb") as f:
            f.write(model)
        sp = spm.SentencePieceProcessor(model_proto=model)
        ref_s = ours_s = float("inf")
        for _ in range(a.repeat):  # the two sides alternate; the best of each (the machine is shared)
            ref, t = seconds(lambda: sp.encode(docs))
            ref_s = min(ref_s, t)
            r = subprocess.run([a.strata, "tokenize", "--tokenizer", tfile, "--time", *files],
                               capture_output=True, text=True, check=True)
            ours = [list(map(int, line.split())) for line in r.stdout.splitlines()]
            ours_s = min(ours_s, sum(float(line.split(" in ")[1].split(" s")[0]) for line in r.stderr.splitlines()))
        score = lambda ids: sum(sp.get_score(i) for i in ids)
        differ = [i for i in range(len(docs)) if ref[i] != ours[i]]
        ties = [i for i in differ if abs(score(ref[i]) - score(ours[i])) <= 1e-4]
        bad += len(differ) - len(ties) + abs(len(ref) - len(ours))
        one_ref, one_s = seconds(lambda: sp.encode(sample))
        one_ours, one_ours_s = strata_encode(a.strata, os.path.abspath(tfile), os.path.join(work, "text.txt"))
        one_bad = sum(x != y for x, y in zip(one_ref, one_ours)) + abs(len(one_ref) - len(one_ours))
        print(f"| {name} | {vocab} | {sum(map(len, ref))} | {len(differ)} | {len(ties)} | {mb / ours_s:.2f} | "
              f"{mb / ref_s:.2f} | {ref_s / ours_s:.2f}x | {one_bad}, {mb / one_ours_s:.2f}, {mb / one_s:.2f} |", flush=True)
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", required=True, help="the strata binary")
    ap.add_argument("--vocab", type=int, default=16000, help="vocabulary of the larger tokenizers")
    ap.add_argument("--repeat", type=int, default=3, help="SentencePiece: timed runs of each side, the best kept")
    ap.add_argument("--families", default="bpe,spm", help="bpe (tokenizers), spm (sentencepiece), or both")
    a = ap.parse_args()
    families = set(a.families.split(","))
    if not families or families - {"bpe", "spm"}:
        sys.exit(f"check_tokenizer: --families '{a.families}': give bpe, spm or bpe,spm")
    sample = text()
    docs = documents(sample)
    mb = len(sample.encode()) / 1e6
    work = tempfile.mkdtemp(prefix="strata-tok-")
    path = os.path.join(work, "text.txt")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(sample)
    versions = []
    if "bpe" in families:
        import tokenizers
        versions.append(f"tokenizers {tokenizers.__version__}")
    if "spm" in families:
        import sentencepiece
        versions.append(f"sentencepiece {sentencepiece.__version__}")
    print(f"text: {len(sample.encode())} bytes (fortunes + X11 Compose); {', '.join(versions)}; one thread each")
    bad = 0
    if "bpe" in families:
        print("| tokenizer | vocab | tokens | mismatches | strata MB/s | tokenizers MB/s (one string) | "
              "tokenizers MB/s (4 KB documents) | strata / best of tokenizers |")
        print("|---|---|---|---|---|---|---|---|")
        for style, vocab, tok in bpe_tokenizers(a.vocab):
            tfile = os.path.join(work, f"{style}-{vocab}.json")
            tok.save(tfile)
            ref, one_s = seconds(lambda: tok.encode(sample, add_special_tokens=False).ids)
            _, docs_s = seconds(lambda: [tok.encode(d, add_special_tokens=False) for d in docs])
            ours, ours_s = strata_encode(a.strata, tfile, path)
            bad += row(style, vocab, ref, ours, mb, ours_s, one_s, docs_s)
    if "spm" in families:
        bad += spm_table(a, sample, docs, mb, work)
    shutil.rmtree(work)
    print("all ids identical" if bad == 0 else f"MISMATCH: {bad} ids differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
