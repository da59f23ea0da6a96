"""Judges: free-text answer → emotion words, and → positive / negative / neutral.

:class:`LexiconJudge` is deterministic. Its emotion vocabulary is a built-in list of common emotion
words, plus — when an :class:`~affectlocus.unibench.wheels.EmotionWheels` is given — every surface form
of the wheel tables (``format.csv``) that maps onto at least one wheel, minus :data:`NOT_EMOTIONS`
(generic words the tables list, e.g. "access", "open", "present"). Multi-word forms ("let down",
"fed up") are matched longest first. Sentiment uses a small built-in polarity lexicon, the valence
of the matched emotion words, and explicit answers ("The sentiment is negative").

Negation: a negator (not, no, never, n't, without, hardly, …) negates matches in the next
:data:`NEGATION_WINDOW` words of the same clause (a clause ends at , . ; : ! ? or but/however/
although/though/yet). A negated emotion word is dropped ("not happy" gives no "happy"); a negated
polarity word flips ("not good" counts as negative). **Limits**: no double negation ("not unhappy"
just drops "unhappy"), no scope beyond the window ("I would never, ever say I was happy" keeps
happy), no sarcasm, hedges or hypotheticals ("would be happy if"), English only, and "nothing but
joy" is wrongly negated. The hit-rate metric rewards any matching cluster, so a judge that lists
more words scores higher; this one lists only words present in the answer.

:class:`LLMJudge` runs any local HF causal LM with prompts written here: emotion words by greedy
generation (parsed as a comma list; falls back to the lexicon on the judge's output), sentiment by
label scoring of ``negative / neutral / positive`` (always a valid label).
"""
from __future__ import annotations

import hashlib
import re
from typing import Iterable, Protocol, Sequence

from ..unibench.wheels import EmotionWheels, parse_labels

NEGATORS = frozenset({"not", "no", "never", "without", "hardly", "barely", "scarcely", "nor", "neither",
                      "cannot", "lacks", "lacking", "nothing", "none", "nobody"})
CLAUSE_BREAKS = frozenset({"but", "however", "although", "though", "yet", "whereas"})
NEGATION_WINDOW = 3

#: Built-in emotion words → basic emotion (anger, disgust, fear, joy, neutral, sadness, surprise).
BASIC = {
    "anger": "angry anger angered mad furious rage enraged annoyed annoyance irritated irritation frustrated "
             "frustration outraged resentful hostile indignant irate livid bitter",
    "disgust": "disgust disgusted disgusting revolted repulsed gross grossed loathing contempt contemptuous",
    "fear": "fear afraid scared frightened fearful terrified anxious anxiety worried worry worrying nervous "
            "panic panicked alarmed tense uneasy apprehensive",
    "joy": "joy joyful happy happiness glad delighted pleased cheerful excited excitement thrilled content "
           "satisfied amused love loving grateful proud elated relieved hopeful enthusiastic",
    "sadness": "sad sadness unhappy sorrow sorrowful depressed miserable disappointed disappointment upset "
               "lonely grief grieving heartbroken hurt gloomy melancholy regret hopeless",
    "surprise": "surprise surprised shocked astonished amazed astonishment startled stunned",
    "neutral": "neutral calm indifferent",
}
BASIC_OF: dict[str, str] = {w: base for base, words in BASIC.items() for w in words.split()}
#: Valence of basic emotions and of the wheels' level-1 clusters.
VALENCE = {"joy": 1, "sadness": -1, "anger": -1, "fear": -1, "disgust": -1, "surprise": 0, "neutral": 0,
           "happy": 1, "joyful": 1, "peaceful": 1, "powerful": 1, "genius": 1, "sad": -1, "mad": -1,
           "angry": -1, "scared": -1, "fearful": -1, "disgusted": -1, "bad": -1, "surprised": 0}
#: Basic emotion of the canonical label words used by MELD, IEMOCAP and MER (label → basic).
LABEL_BASIC = {"happy": "joy", "happiness": "joy", "joy": "joy", "angry": "anger", "anger": "anger",
               "sad": "sadness", "sadness": "sadness", "worried": "fear", "fear": "fear", "surprise": "surprise",
               "disgust": "disgust", "neutral": "neutral"}
_SENT = {
    1: "good great excellent wonderful amazing awesome love loved lovely best enjoy enjoyed enjoyable fun funny "
       "beautiful brilliant fantastic nice superb terrific impressive entertaining charming perfect positive "
       "favorite recommend masterpiece smart witty compelling satisfying warm moving engaging thanks thank "
       "like liked fine pleasant optimistic",
    -1: "bad terrible awful horrible worst boring dull hate hated poor disappointing waste mess fail fails failed "
        "failure ugly negative weak tedious lame pointless worse unfortunately problem delayed cancelled rude "
        "sucks mediocre bland predictable tiresome unpleasant stupid annoying pessimistic",
}
POLARITY: dict[str, int] = {w: p for p, words in _SENT.items() for w in words.split()}
EXPLICIT = {"positive": "positive", "negative": "negative", "neutral": "neutral"}
#: Generic words listed as surface forms in the wheel tables that are not emotions in free text.
NOT_EMOTIONS = frozenset("""
    here please might far left lost cast original care seen missed missing miss connection connections
    connected connecting free true available open opened close closed cold clear clearly certain certainly
    completely complete strong serious seriously gone drive drives driving driver driven directed direction
    directing familiar wonder wondering heavy attendant attendants attention attend face faces faced play
    playing played important importance personal personality spend spent spending receive received receipt
    support supporting interest busy opening quick quickly sharp wild wildly trouble cheaters cheating
    originality originally created creates creating create information living lives live effective sleep
    sleepy tired safety safe safely denied welcome involved involving move moves moved touch broke breaking
    rich release released expect expected expecting expectations notice noticed private present presents
    odd balance including includes pressure casting value values test testing helping escape current
    currently realize realized security essentially achieves regarding weight lower considering considered
    silence refuse refuses impression tight scattered critics minor independent detective shake relate
    associated settle minority recognize forcing push reserve ignore ignored significant relies collection
    throw throws throwing thrown unveils minded engage reveals tire heroes animation animated soft bright
    biting cheek irony exploitation access accessed accessible active actively aid aided aim aimed aims
    analyze analyzed analytical appeal agree agreed bare dense covered well fine like quiet aware bit
    """.split())
_WORD = re.compile(r"[a-z]+(?:['’][a-z]+)*|[.,;:!?]")


def tokens(text: str) -> list[str]:
    """Lower-cased words (apostrophes kept, ``’`` → ``'``) and clause punctuation."""
    return [t.replace("’", "'") for t in _WORD.findall(str(text).lower())]


def _derived(form: str, base: str) -> bool:
    """A surface form that is the base word or an inflection of it ("angered" of "anger"), not a
    shorter stem the tables also list ("help" of "helpless", "use" of "useless")."""
    return form == base or (len(base) >= 4 and len(form) >= len(base) - 1 and form[:4] == base[:4])


def _is_negator(tok: str) -> bool:
    return tok in NEGATORS or tok.endswith("n't")


class Judge(Protocol):
    """What the runner needs from a judge (batched; ``describe`` is part of cache keys)."""

    def emotions(self, texts: Sequence[str]) -> list[list[str]]: ...
    def sentiments(self, texts: Sequence[str]) -> list[str]: ...
    def describe(self) -> str: ...


class LexiconJudge:
    """Deterministic, negation-aware lexicon judge (see module docstring for the rules and limits)."""

    def __init__(self, wheels: EmotionWheels | str | None = None, *, window: int = NEGATION_WINDOW):
        if isinstance(wheels, str) or hasattr(wheels, "__fspath__"):
            wheels = EmotionWheels.load(wheels)
        self.wheels = wheels
        self.window = window
        vocab = set(BASIC_OF)
        if wheels is not None:
            n = len(wheels.wheels)
            vocab |= {w.replace("’", "'") for w, bases in wheels.formats.items()
                      if w and w not in NOT_EMOTIONS and any(_derived(w, b) for b in bases)
                      and any(wheels.cluster(w, k) for k in range(n))}
        self.vocab = frozenset(vocab)
        self._phrases = {tuple(w.split()) for w in self.vocab if " " in w}
        self._max_len = max([len(p) for p in self._phrases] + [1])

    def describe(self) -> str:
        src = hashlib.sha256(repr(sorted(self.vocab)).encode()).hexdigest()[:10]
        return f"lexicon(v1, vocab={len(self.vocab)}:{src}, window={self.window})"

    # -- matching -------------------------------------------------------------------------------
    def matches(self, text: str) -> list[tuple[str, bool]]:
        """``(word_or_phrase, negated)`` for every emotion or polarity word in ``text``, in order."""
        toks = tokens(text)
        out: list[tuple[str, bool]] = []
        scope = 0  # words still negated
        i = 0
        while i < len(toks):
            tok = toks[i]
            if tok in ".,;:!?" or tok in CLAUSE_BREAKS:
                scope, i = 0, i + 1
                continue
            span = self._phrase_at(toks, i)
            if span:
                out.append((" ".join(toks[i:i + span]), scope > 0))
                scope, i = max(scope - span, 0), i + span
                continue
            if _is_negator(tok):
                scope, i = self.window, i + 1
                continue
            if tok in self.vocab or tok in POLARITY or tok in EXPLICIT:
                out.append((tok, scope > 0))
            scope, i = max(scope - 1, 0), i + 1
        return out

    def _phrase_at(self, toks: list[str], i: int) -> int:
        for n in range(min(self._max_len, len(toks) - i), 1, -1):
            if tuple(toks[i:i + n]) in self._phrases:
                return n
        return 0

    # -- emotions -------------------------------------------------------------------------------
    def emotion_words(self, text: str) -> list[str]:
        """Non-negated emotion words of ``text``, in order of first appearance, without repeats."""
        seen: dict[str, None] = {}
        for word, negated in self.matches(text):
            if not negated and word in self.vocab:
                seen.setdefault(word, None)
        return list(seen)

    def emotions(self, texts: Sequence[str]) -> list[list[str]]:
        return [self.emotion_words(t) for t in texts]

    # -- sentiment ------------------------------------------------------------------------------
    def valence(self, word: str) -> int:
        """+1 / -1 / 0 for an emotion or polarity word (built-in tables first, then a vote of wheels)."""
        word = word.lower().strip()
        if word in BASIC_OF:
            return VALENCE[BASIC_OF[word]]
        if word in POLARITY:
            return POLARITY[word]
        if self.wheels is None:
            return 0
        clusters = [self.wheels.cluster(word, k) for k in range(len(self.wheels.wheels))]
        total = sum(VALENCE.get(c or "", 0) for c in clusters)
        return (total > 0) - (total < 0)

    def sentiment(self, text: str) -> str:
        """positive / negative / neutral: explicit answer words win, else the sum of valences."""
        found = self.matches(text)
        explicit = [(EXPLICIT[w], neg) for w, neg in found if w in EXPLICIT]
        if any(not neg for _, neg in explicit):
            labels = [lab for lab, neg in explicit if not neg]
            counts = {lab: labels.count(lab) for lab in set(labels)}
            best = max(counts.values())
            winners = [lab for lab, c in counts.items() if c == best]
            return winners[0] if len(winners) == 1 else "neutral"
        score = sum(-self.valence(w) if neg else self.valence(w) for w, neg in found if w not in EXPLICIT)
        score += sum({"positive": -1, "negative": 1}.get(lab, 0) for lab, _ in explicit)  # "not positive"
        return "positive" if score > 0 else "negative" if score < 0 else "neutral"

    def sentiments(self, texts: Sequence[str]) -> list[str]:
        return [self.sentiment(t) for t in texts]

    def sentiment_of(self, emotions: Iterable[str]) -> str:
        """positive / negative / neutral from a list of emotion words (sum of valences)."""
        score = sum(self.valence(w) for w in emotions)
        return "positive" if score > 0 else "negative" if score < 0 else "neutral"


_WHEEL1_BASIC = {"happy": "joy", "sad": "sadness", "mad": "anger", "scared": "fear", "disgusted": "disgust",
                 "surprised": "surprise"}


def map_to_label(emotions: Sequence[str], labels: Sequence[str], wheels: EmotionWheels | None = None) -> str | None:
    """Map judged emotion words onto a closed label set (first word that maps wins; else None)."""
    targets = {LABEL_BASIC.get(lab.lower(), BASIC_OF.get(lab.lower(), lab.lower())): lab for lab in labels}
    for word in emotions:
        w = word.lower().strip()
        if w in {lab.lower() for lab in labels}:
            return next(lab for lab in labels if lab.lower() == w)
        basic = BASIC_OF.get(w)
        if basic is None and wheels is not None:
            basic = _WHEEL1_BASIC.get(wheels.cluster(w, 0) or "")
        if basic in targets:
            return targets[basic]
    return None


EMOTION_PROMPT = ("Please act as an expert in emotions. Below is a description of a person's emotional state. "
                  "List the emotion words that describe the person's emotional state, separated by commas "
                  "(for example: happy, excited). If no emotion is described, answer: none.\n\n"
                  "Description: {text}")
SENTIMENT_PROMPT = ("Please act as an expert in emotions. Based on the following description of a person's "
                    "emotional state, is the person's overall sentiment positive, negative or neutral? "
                    "Answer with one word.")


class LLMJudge:
    """A local HF causal LM as judge (greedy, seeded, batched). ``model`` may be any loaded model.

    ``emotion_prompt`` holds ``{text}``; ``sentiment_prompt`` is the instruction the texts follow
    (as ``Text: …``) when the three sentiment labels are scored.
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 8, max_new_tokens: int = 32, seed: int = 0,
                 emotion_prompt: str = EMOTION_PROMPT, sentiment_prompt: str = SENTIMENT_PROMPT,
                 fallback: LexiconJudge | None = None, name: str = ""):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_new_tokens, self.seed = batch_size, max_new_tokens, seed
        self.emotion_prompt, self.sentiment_prompt = emotion_prompt, sentiment_prompt
        self.fallback = fallback or LexiconJudge()
        self.name = name or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__

    def describe(self) -> str:
        from ..models.fingerprint import model_fingerprint
        h = hashlib.sha256((self.emotion_prompt + self.sentiment_prompt).encode()).hexdigest()[:8]
        return (f"llm({self.name}, weights={model_fingerprint(self.model)}, prompts={h}, "
                f"max_new_tokens={self.max_new_tokens}, seed={self.seed})")

    def _ask(self, template: str, texts: Sequence[str]) -> list[str]:
        from .predict import generate_answers
        from ..tasks.prompts import GENERATION_SYSTEM, _chat, has_chat_template
        out: list[str] = []
        for i in range(0, len(texts), self.batch_size):
            chunk = [template.format(text=t) for t in texts[i:i + self.batch_size]]
            if has_chat_template(self.tokenizer):
                chunk = [_chat(self.tokenizer, GENERATION_SYSTEM, [{"role": "user", "content": c}], True)
                         for c in chunk]
            else:
                chunk = [f"{c}\nAnswer:" for c in chunk]
            out += generate_answers(self.model, self.tokenizer, chunk, max_new_tokens=self.max_new_tokens,
                                    seed=self.seed)
        return out

    def emotions(self, texts: Sequence[str]) -> list[list[str]]:
        """Emotion words per text: the judge's comma list, or the lexicon on its reply if unparsable."""
        return [parse_emotion_list(reply) or self.fallback.emotion_words(reply)
                for reply in self._ask(self.emotion_prompt, texts)]

    def sentiments(self, texts: Sequence[str]) -> list[str]:
        """negative / neutral / positive per text, by label scoring (the judge's most likely word)."""
        from .predict import LabelScorer
        from ..tasks.prompts import PromptStyle, build_label_prompts
        labels = ("negative", "neutral", "positive")
        style = PromptStyle(shots_per_label=0, instruction=self.sentiment_prompt)
        prompts = build_label_prompts(self.tokenizer, labels, list(texts), style=style)
        scorer = LabelScorer(self.model, prompts.prefix_ids, prompts.label_ids,
                             pad_id=self.tokenizer.pad_token_id or 0)
        return [labels[int(k)] for k in scorer.score(prompts.query_ids, self.batch_size).pred]


_LIST_SPLIT = re.compile(r"[,;/\n]|\band\b")


def parse_emotion_list(reply: str) -> list[str]:
    """``"Happy, excited and proud."`` → ``["happy", "excited", "proud"]``; "none" → ``[]``."""
    text = reply.strip().split("\n\n")[0]
    text = re.sub(r"^(emotions?|answer)\s*:\s*", "", text, flags=re.I)
    items = []
    for part in parse_labels(text) if text.startswith("[") else _LIST_SPLIT.split(text):
        word = re.sub(r"[^a-z' -]", "", part.lower()).strip(" -'")
        if word and word != "none" and len(word.split()) <= 3:
            items.append(word)
    return list(dict.fromkeys(items))


__all__ = ["BASIC", "Judge", "LLMJudge", "LexiconJudge", "NEGATION_WINDOW", "NEGATORS", "NOT_EMOTIONS",
           "map_to_label", "parse_emotion_list", "tokens"]
