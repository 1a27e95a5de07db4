"""A character tokenizer (no download): the vocabulary is the text's characters, saved
as vocab.json beside the model. Id 0 stands for a character the vocabulary lacks."""

import json
from pathlib import Path

UNKNOWN = "\ufffd"


class CharTokenizer:
    def __init__(self, chars: list[str]) -> None:
        self.chars = [UNKNOWN, *[c for c in chars if c != UNKNOWN]]
        self.ids = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @classmethod
    def load(cls, folder: Path) -> "CharTokenizer":
        chars = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        return cls(chars[1:])

    def save(self, folder: Path) -> None:
        (folder / "vocab.json").write_text(json.dumps(self.chars), encoding="utf-8")

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(c, 0) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def __len__(self) -> int:
        return len(self.chars)
