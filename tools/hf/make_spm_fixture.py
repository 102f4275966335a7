"""Makes the SentencePiece fixture tests/data/tokenizers/ holds: a small Llama-style
model (BPE, byte fallback, identity normalizer, split digits, <unk>=0 <s>=1 </s>=2), trained by the `sentencepiece` Python
library on Debian's fortunes, and the ids that library gives for sample.txt (plain, and
with <s> prepended as Llama's tokenizer does). Run once by hand (outputs are committed):
    /work/venv-tok/bin/pip install sentencepiece
    /work/venv-tok/bin/python tools/hf/make_spm_fixture.py
"""
import glob, io, os, sys
import sentencepiece as spm

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "..", "..", "tests", "data", "tokenizers")


def sentences():
    for path in sorted(glob.glob("/usr/share/games/fortunes/*")):
        if path.endswith((".dat", ".u8")) or os.path.isdir(path):
            continue
        with open(path, "rb") as f:
            for line in f.read().decode("utf-8", errors="replace").splitlines():
                if line.strip():
                    yield line


def main():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences(), model_writer=model, model_type="bpe", vocab_size=1000,
        byte_fallback=True, character_coverage=0.9995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True)
    with open(os.path.join(out, "spm.model"), "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    with open(os.path.join(out, "sample.txt"), encoding="utf-8", newline="") as f:
        sample = f.read()
    ids = sp.encode(sample)
    with open(os.path.join(out, "spm.sample.ids"), "w") as f:
        f.write(" ".join(map(str, ids)) + "\n")
    with open(os.path.join(out, "spm.sample.special.ids"), "w") as f:
        f.write(" ".join(map(str, [sp.bos_id()] + ids)) + "\n")
    print("spm", sp.get_piece_size(), "pieces;", len(ids), "ids for sample.txt")


if __name__ == "__main__":
    sys.exit(main())
