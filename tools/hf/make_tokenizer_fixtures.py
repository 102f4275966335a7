"""Makes the tokenizer fixtures tests/data/tokenizers/ holds: small byte-level BPE
tokenizers in the three pre-tokenizer styles strata reads (GPT-2; Llama-3; Qwen2, which
adds NFC), trained by Hugging Face `tokenizers` on Debian's fortunes, and the ids that
`tokenizers` gives for sample.txt. Run once by hand (the outputs are committed):
    python3 -m venv /tmp/tok && /tmp/tok/bin/pip install tokenizers
    /tmp/tok/bin/python tools/hf/make_tokenizer_fixtures.py
"""
import glob, json, os, sys
from tokenizers import Tokenizer, Regex, models, normalizers, pre_tokenizers, decoders, processors, trainers

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "..", "..", "tests", "data", "tokenizers")
GPT2 = None  # ByteLevel's own regex
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def corpus():
    for path in sorted(glob.glob("/usr/share/games/fortunes/*")):
        if path.endswith((".dat", ".u8")) or os.path.isdir(path):
            continue
        with open(path, "rb") as f:
            yield f.read().decode("utf-8", errors="replace")


def build(style):
    tok = Tokenizer(models.BPE(ignore_merges=(style != "gpt2")))
    if style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        specials = ["<|endoftext|>"]
    else:
        pattern = LLAMA3 if style == "llama3" else QWEN2
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        specials = (["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"] if style == "llama3"
                    else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    if style == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    if style == "llama3":
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                          special_tokens=[(bos, tok.token_to_id(bos))])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def main():
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "sample.txt"), encoding="utf-8", newline="") as f:
        sample = f.read()
    for style in ("gpt2", "llama3", "qwen2"):
        tok = build(style)
        tok.save(os.path.join(out, f"{style}.json"))
        for special in (False, True):
            ids = tok.encode(sample, add_special_tokens=special).ids
            name = f"{style}.sample{'.special' if special else ''}.ids"
            with open(os.path.join(out, name), "w") as f:
                f.write(" ".join(map(str, ids)) + "\n")
        print(style, tok.get_vocab_size(), "tokens;", len(ids), "ids for sample.txt")


if __name__ == "__main__":
    sys.exit(main())
