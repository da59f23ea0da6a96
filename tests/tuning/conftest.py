"""Fixtures for the tuning tests: a tiny offline word-level tokenizer (with a chat template) and tiny
models sized to it."""
from __future__ import annotations

import pytest
import torch

WORDS = ("i loved it hated the film was great awful boring fun what a mess joy sad movie "
         "positive negative neutral how many has and gets more now gives away are left buys bags with "
         "each in total answer number ? . , : user assistant").split()
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")


def tiny_tokenizer(chat: bool = True):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(SPECIAL + list(dict.fromkeys(WORDS)) + [str(n) for n in range(120)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                  pre_tokenizers.Punctuation()])
    core.add_special_tokens(SPECIAL)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<s>", eos_token="</s>")
    if chat:
        tok.chat_template = CHAT
    return tok


PAIRS = [("I loved it", "positive"), ("I hated the film", "negative"), ("what a mess", "negative"),
         ("the movie was great fun", "positive"), ("boring", "negative"), ("joy", "positive"),
         ("the film was awful", "negative"), ("it was the film", "neutral")]


@pytest.fixture(scope="session")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def plain_tok():
    return tiny_tokenizer(chat=False)


@pytest.fixture
def pairs():
    return list(PAIRS)


@pytest.fixture
def make(tok):
    """``make("llama")`` → a tiny random model whose vocabulary fits the tiny tokenizer."""
    from affectlocus.models import tiny_model

    def build(arch: str = "llama", seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return tiny_model(arch, seed=seed, vocab_size=len(tok), **overrides).eval()
    return build


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; with 2 threads on a busy 2-core box OpenMP spin-waits
    make each step ~100× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
