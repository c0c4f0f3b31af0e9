"""A small deterministic "model": text, JSON, tool calls, embeddings and entities.

Nothing here is learned. Every output is drawn from a random generator seeded by a hash of
everything that should change it (prompt, adapter ids and weights, merged-adapter
settings, sampling parameters, and the seed when sampling), so the same request always
gives the same tokens, and changing any of those gives different ones. Greedy requests
ignore the seed. The whole generation is planned up front; the server then paces it out
token by token (see ``lorax.testing._server``).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from lorax.testing._schema_gen import generate_json
from lorax.testing._tokenizer import EOS, Piece, Tokenizer, token_id

__all__ = ["AltToken", "Generation", "GenToken", "ToolPlan", "ToyModel"]

_WORDS = (
    "the", "model", "answers", "with", "a", "short", "and", "steady", "sentence", "about", "light", "water",
    "stone", "paper", "river", "city", "music", "number", "garden", "window", "signal", "bridge", "harbor",
    "morning", "quiet", "bright", "simple", "careful", "open", "small", "green", "field", "market", "story",
    "engine", "lamp", "north", "road", "season", "cloud", "tower", "letter", "voice", "table", "friend",
)  # fmt: skip


@dataclass
class AltToken:
    """An alternative token: id, text, and logprob (None for -inf)."""

    id: int
    text: str
    logprob: float | None


@dataclass
class GenToken:
    """A generated token."""

    id: int
    text: str
    logprob: float | None
    special: bool = False
    alternatives: list[AltToken] = field(default_factory=list)


@dataclass
class Generation:
    """One planned sequence: its tokens, text (special tokens skipped), finish reason and seed."""

    tokens: list[GenToken]
    text: str
    finish_reason: str
    seed: int | None
    prefill: list[AltToken]


@dataclass
class ToolPlan:
    """What a forced tool grammar allows: candidate functions (name, parameters), and no_tool."""

    functions: list[tuple[str, str, Any]]  # (name, description, parameters schema)
    allow_no_tool: bool


def _rng(*parts: Any) -> random.Random:
    digest = hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def _round(value: float) -> float:
    return round(value, 4)


class ToyModel:
    """Plans generations, embeddings and classifications for the fake server."""

    def __init__(self, tokenizer: Tokenizer, embedding_dim: int = 32) -> None:
        self.tokenizer = tokenizer
        self.embedding_dim = embedding_dim

    # -- generation

    def generate(
        self,
        *,
        prompt: str,
        key: tuple[Any, ...],
        max_new_tokens: int,
        stop: list[str],
        ignore_eos: bool,
        seed: int | None,
        k_alternatives: int,
        prefill: bool,
        add_special_tokens: bool,
        schema: Any = None,
        has_schema: bool = False,
        tools: ToolPlan | None = None,
    ) -> Generation:
        """Plan one sequence. `key` holds everything besides the prompt that changes the output."""
        rng = _rng(prompt, key, seed)
        if tools is not None:
            target = self._tool_text(prompt, tools, rng)
        elif has_schema:
            value = generate_json(schema, rng, hints=self._hints(prompt))
            target = json.dumps(value, ensure_ascii=False)
        else:
            target = self._free_text(prompt, rng)
        tokens: list[GenToken] = []
        text = ""
        finish = "length"
        pieces = self.tokenizer.split(target)
        filler = 0
        while len(tokens) < max_new_tokens:
            if pieces:
                piece = pieces.pop(0)
            elif not ignore_eos:
                tokens.append(GenToken(EOS[0], EOS[1], -_round(rng.uniform(0.0001, 0.05)), special=True))
                finish = "eos_token"
                break
            else:
                word = " " + _WORDS[(filler * 7 + len(prompt)) % len(_WORDS)]
                filler += 1
                piece = Piece(token_id("▁" + word[1:]), "▁" + word[1:], word, 0, 0)
            token = GenToken(piece.id, piece.text, -_round(rng.uniform(0.0001, 2.5)))
            tokens.append(token)
            text += piece.text
            if any(s and text.endswith(s) for s in stop):
                finish = "stop_sequence"
                break
        for token in tokens:
            if k_alternatives:
                token.alternatives = self._alternatives(token, k_alternatives, rng)
        prefill_tokens: list[AltToken] = []
        if prefill:
            for i, p in enumerate(self.tokenizer.encode(prompt, add_special_tokens)):
                logprob = None if i == 0 else -_round(rng.uniform(0.001, 12.0))
                prefill_tokens.append(AltToken(p.id, p.text.lstrip(" "), logprob))
        return Generation(tokens, text, finish, seed, prefill_tokens)

    def _hints(self, prompt: str) -> list[str]:
        words = re.findall(r"[A-Za-z]{4,}", prompt)
        return [w for w in words if w.lower() not in ("inst", "what", "that", "this", "with")][:8]

    def _free_text(self, prompt: str, rng: random.Random) -> str:
        hints = self._hints(prompt)
        count = rng.randint(6, 16)
        words = [rng.choice(_WORDS) for _ in range(count)]
        if hints:
            words[rng.randrange(1, count)] = rng.choice(hints)
        words[0] = words[0].capitalize()
        if count > 8:
            words[count // 2] += ","
        return " " + " ".join(words) + "."

    def _tool_text(self, prompt: str, plan: ToolPlan, rng: random.Random) -> str:
        # Pick the function whose name or description shares most words with the prompt;
        # with no overlap at all (and no_tool allowed) answer in plain words via no_tool.
        prompt_words = set(re.findall(r"[a-z]{3,}", prompt.lower()))
        best: tuple[int, int] | None = None
        for i, (name, description, _) in enumerate(plan.functions):
            words = set(re.findall(r"[a-z]{3,}", f"{name.replace('_', ' ')} {description}".lower()))
            score = len(words & prompt_words)
            if best is None or score > best[0]:
                best = (score, i)
        if best is None or (best[0] == 0 and plan.allow_no_tool and len(plan.functions) > 1):
            content = self._free_text(prompt, rng).strip()
            return json.dumps({"function": {"_name": "no_tool", "content": content}}, ensure_ascii=False)
        name, _, params = plan.functions[best[1]]
        args = generate_json(params if isinstance(params, dict) else {}, rng, hints=self._hints(prompt))
        function = {"_name": name}
        if isinstance(args, dict):
            function.update(args)
        return json.dumps({"function": function}, ensure_ascii=False)

    def _alternatives(self, token: GenToken, k: int, rng: random.Random) -> list[AltToken]:
        alts = [AltToken(token.id, token.text, token.logprob)]
        floor = token.logprob if token.logprob is not None else 0.0
        for j in range(1, k):
            word = " " + rng.choice(_WORDS)
            # Past the third alternative, or now and then, the shard reports -inf (null).
            logprob = None if (j >= 2 and rng.random() < 0.5) else floor - _round(rng.uniform(0.5, 6.0))
            alts.append(AltToken(token_id("▁" + word[1:]), word, logprob))
        return alts

    # -- embeddings and classification

    def embed(self, text: str, adapter_key: tuple[Any, ...]) -> list[float]:
        """A deterministic vector of ``embedding_dim`` floats."""
        rng = _rng("embed", text, adapter_key)
        return [_round(rng.uniform(-0.1, 0.1)) for _ in range(self.embedding_dim)]

    # Capitalised words that usually start a sentence rather than name something.
    _STARTERS = frozenset(
        ("A", "An", "The", "He", "She", "It", "They", "We", "I", "You", "This", "That", "In", "On", "At", "But")
    )

    def classify(self, text: str) -> list[dict[str, Any]]:
        """NER-style entities, aggregated like LoRAX (``O`` spans after an entity become ``"0"``)."""
        data = text.encode("utf-8")
        # Byte offset of every character: entities carry UTF-8 byte offsets
        # (aggregate_ner_output_simple in router/src/infer.rs).
        offsets = [0]
        for ch in text:
            offsets.append(offsets[-1] + len(ch.encode("utf-8")))
        tokens: list[tuple[int, int, str]] = []  # byte start, byte end, word
        for m in re.finditer(r"\w+|[^\w\s]", text):
            tokens.append((offsets[m.start()], offsets[m.end()], m.group(0)))
        labels: list[str] = []
        for i, (_, _, word) in enumerate(tokens):
            is_entity = word[:1].isupper() and word not in self._STARTERS
            if is_entity and i > 0 and labels[-1] != "O":
                labels.append(labels[-1])
            elif is_entity:
                run = [word]
                for _, _, nxt in tokens[i + 1 :]:
                    if not (nxt[:1].isupper() and nxt not in self._STARTERS):
                        break
                    run.append(nxt)
                digest = hashlib.blake2b(" ".join(run).encode(), digest_size=2).digest()
                kind = "ORG" if len(run) >= 3 else ("PER", "LOC", "MISC")[digest[0] % 3]
                labels.append(kind)
            else:
                labels.append("O")
        entities: list[dict[str, Any]] = []
        seen_entity = False
        i = 0
        while i < len(tokens):
            tag = labels[i] if labels[i] != "O" else "0"
            j = i
            while j + 1 < len(tokens) and (labels[j + 1] if labels[j + 1] != "O" else "0") == tag:
                j += 1
            if tag != "0":
                seen_entity = True
            if seen_entity:
                start, end = tokens[i][0], tokens[j][1]
                word = data[start:end].decode("utf-8", "replace")
                rng = _rng("classify", word, start)
                entities.append(
                    {
                        "entity_group": tag,
                        "score": _round(rng.uniform(0.95, 0.9999)),
                        "word": word.translate(_ASCII_LOWER),
                        "start": start,
                        "end": end,
                    }
                )
            i = j + 1
        return entities


_ASCII_LOWER = str.maketrans({chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)})
