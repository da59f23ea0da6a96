"""Judges on hand-made texts: negation, clauses, phrases, explicit answers; wheels; the LLM judge."""
from __future__ import annotations

import pytest

from affectlocus.evaluation.judges import LexiconJudge, LLMJudge, map_to_label, parse_emotion_list, tokens
from affectlocus.unibench.metrics import hit_rate
from affectlocus.tasks.prompts import char_tokenizer
from affectlocus.unibench.wheels import PACKAGED_WHEELS, EmotionWheels
from affectlocus.models import tiny_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def judge():
    return LexiconJudge()


@pytest.fixture(scope="module")
def wheels():
    return EmotionWheels.load()  # the tables shipped with the package


@pytest.mark.parametrize("text, words", [
    ("She feels happy and excited!", ["happy", "excited"]),
    ("I am not happy at all, but quite angry.", ["angry"]),          # negation ends at the clause
    ("He was never sad; he was relieved.", ["relieved"]),
    ("I don't feel scared, I feel proud", ["proud"]),                 # n't negates, comma ends scope
    ("Not very happy, honestly.", []),                                 # window of 3 words
    ("no longer afraid of anything but still nervous", ["nervous"]),  # "but" ends the negation
    ("happy happy HAPPY", ["happy"]),                                  # de-duplicated, case-folded
    ("Without fear or anger, she is calm", ["calm"]),
    ("The weather is nice today", []),                                 # polarity words are not emotions
])
def test_emotion_words_with_negation(judge, text, words):
    assert judge.emotion_words(text) == words


@pytest.mark.parametrize("text, label", [
    ("The sentiment is negative.", "negative"),
    ("Positive. The reviewer loved it.", "positive"),
    ("It is not positive; it is rather negative", "negative"),
    ("neutral", "neutral"),
    ("not bad at all", "positive"),                  # negated polarity flips
    ("The movie was boring and predictable", "negative"),
    ("She is happy but also a little sad", "neutral"),
    ("He was never sad", "positive"),
    ("I cannot say anything", "neutral"),
    ("The sentiment is neutral although the author seems happy", "neutral"),  # explicit answer wins
])
def test_sentiment(judge, text, label):
    assert judge.sentiment(text) == label


def test_batch_interfaces_and_helpers(judge):
    texts = ["so happy", "furious and disgusted"]
    assert judge.emotions(texts) == [["happy"], ["furious", "disgusted"]]
    assert judge.sentiments(texts) == ["positive", "negative"]
    assert judge.sentiment_of(["joyful", "sad", "proud"]) == "positive"
    assert judge.sentiment_of([]) == "neutral"
    assert tokens("Don’t stop, OK?") == ["don't", "stop", ",", "ok", "?"]
    assert map_to_label(["calm", "furious"], ("anger", "joy", "neutral")) == "neutral"
    assert map_to_label(["furious"], ("anger", "joy", "neutral")) == "anger"
    assert map_to_label(["delighted"], ("happy", "sad", "neutral", "angry")) == "happy"
    assert map_to_label(["bored"], ("happy", "sad")) is None
    assert parse_emotion_list("Happy, excited and proud.") == ["happy", "excited", "proud"]
    assert parse_emotion_list("[sad, angry]") == ["sad", "angry"]
    assert parse_emotion_list("Emotions: none") == []
    assert judge.describe() == LexiconJudge().describe()


def test_wheel_vocabulary_and_hit_rate(wheels):
    judge = LexiconJudge(wheels)
    assert {"let down", "fed up", "at ease", "furious", "angered"} <= judge.vocab
    assert not {"here", "help", "use", "driving", "please"} & judge.vocab  # generic table forms dropped
    assert judge.emotion_words("He felt let down and fed up, not at ease.") == ["let down", "fed up"]
    assert judge.emotion_words("I do not care, not good enough!") == ["not good enough"]  # phrase owns its "not"
    answers = {"a": "The speaker sounds furious.", "b": "She is not happy; she is worried.", "c": "No emotion."}
    preds = dict(zip(answers, judge.emotions(list(answers.values()))))
    assert preds == {"a": ["furious"], "b": ["worried"], "c": []}
    res = hit_rate(preds, {"a": "angry", "b": "happy", "c": "sad"}, wheels)
    assert res.per_wheel == [pytest.approx(1 / 3)] * 5  # a hits on every wheel, b (negated happy) and c miss
    assert hit_rate(preds, {"a": "angry", "b": "happy", "c": "sad"}) == res  # default: the packaged tables
    assert LexiconJudge(PACKAGED_WHEELS).describe() == judge.describe()  # a folder path loads them too
    assert judge.sentiment("The speaker feels dejected and forlorn.") == "negative"  # valence via the wheels
    assert judge.describe() != LexiconJudge().describe()


def test_llm_judge_is_seeded_batched_and_valid():
    tok = char_tokenizer()
    model = tiny_model("llama", seed=11)
    texts = ["happy and excited", "very sad", "calm"]
    a = LLMJudge(model, tok, batch_size=2, max_new_tokens=4)
    b = LLMJudge(model, tok, batch_size=3, max_new_tokens=4)
    assert a.sentiments(texts) == b.sentiments(texts)
    assert set(a.sentiments(texts)) <= {"negative", "neutral", "positive"}
    emo = a.emotions(texts)
    assert emo == b.emotions(texts) and all(isinstance(e, list) for e in emo)
    assert "weights=" in a.describe() and a.describe() == b.describe()
