"""A character-level `tokenizers.Tokenizer` (ids = code points 32..126, newline 10, ChatML's two
special tokens 1 and 2) that fits a tiny random DecoderLM's 128-id vocabulary, for prompt and
generation tests that need exact token counts without a real LM's 50k-150k vocabulary."""
from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from irjax.data.gguf_tokenizer import SpecialIds

VOCAB_SIZE = 128
SPECIAL = SpecialIds(bos=None, eos=2, pad=0, unk=0, add_bos=False, add_eos=False)


def char_tokenizer() -> Tokenizer:
    vocab = {"<unk>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "\n": 10}
    vocab.update({chr(i): i for i in range(32, 127)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    return tokenizer
