"""Approval gates: text a peer must not emit on its own (block) or only with a human's yes (approve).

What is matched where (every rule sees the field text normalised first: Unicode NFKD, format
characters and combining marks (accents, variation selectors) removed, NFKC, case folded,
Cyrillic/Greek look-alike letters read as Latin, whitespace runs collapsed, so `ＧＩＴ  ｐｕｓｈ`,
`git\u200b push`, `gi\ufe0ft push`, `gi\u0301t push`, `gіt push` (Cyrillic і) and `GIT   PUSH` all
read `git push`):
- risky actions in every one of the seven fields: a model, or a prompt-injected CMB, cannot step
  around a gate by writing the action in `focus` or `mood` instead of `intent`. Each rule is a class:
  `git` with any global options before `push` (`-C dir`, `-c k=v`, `--no-pager`); `commit` (a few
  words, `directly`/`straight`) `to` main, master, trunk or production; the deploy and publish word
  families (`deploying`, `redeployment`, `published`); `rm` with a recursive and a force flag in any
  spelling, order or split within one command (`-rf`, `-Rf`, `-r -f`, `--recursive --force`);
  `.env`; `production config`;
- `secrets` (a promise to touch them) in `intent` and `commitment` only, the fields that say what the
  peer will do: security peers talk about secrets in their findings all the time;
- secret shapes (private keys, API keys) in every field, always blocking.
`approval_gates = "none"` drops the approval rules; the secret-leak rules stay, because no setting
should let a peer broadcast a credential to the mesh. Custom rules from agent.toml (their own fields,
every field by default, the same normalisation) are added to whatever remains.

A verdict quotes what a rule matched (its normalised text, at most 80 characters), so an operator sees
why a reply waits; only secret shapes are masked: a secret rule's excerpt is `redact()`'s prefix and
length, and any key shape inside another rule's match, like every held reply shown to a user and model
error text, goes through `xmesh_agent.secret_shapes.mask_secrets` (the same key prefixes, whole or
echoed in part). So verdicts can be logged, put in a workflow memo or shown in a UI without re-leaking
a credential.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from xmesh_agent.config import GateRule, SafetyConfig
from xmesh_agent.roles import CAT7
from xmesh_agent.secret_shapes import KEY_PREFIXES, mask_secrets

GateAction = Literal["block", "approve"]
MAX_SHOWN = 8
SHOWN_MAX = 80
"""How much of what a non-secret rule matched a verdict quotes."""


@dataclass(frozen=True)
class CompiledRule:
    name: str
    regex: re.Pattern[str]
    fields: tuple[str, ...]
    action: GateAction
    secret: bool = False
    """A secret-shape rule: its excerpt shows only the shape's public prefix."""


def _rule(name: str, pattern: str, fields: Sequence[str], action: GateAction, **kw: Any) -> CompiledRule:
    return CompiledRule(name, re.compile(pattern, re.IGNORECASE), tuple(fields), action, **kw)


PROMISE_FIELDS = ("intent", "commitment")
"""The fields where a peer says what it will do."""

# A shell word: quoted (spaces inside) or a run of non-space; the text is normalised, so spaces are single.
_WORD = r"""(?:"[^"]*"|'[^']*'|[^\s;&|'"]+)"""
# git's global options before the subcommand (up to ten); the named ones take a separate value.
_GIT_OPTION = rf"(?>(?:-c|-C|--git-dir|--work-tree|--namespace|--config-env|--super-prefix)\s+{_WORD}|-\S*)"
# rm's flags within the same command (up to `;`, `&`, `|`): -r/-R/--r... and -f/--f..., any order or split.
_RM_ARGS = rf"(?:\s+{_WORD}){{0,12}}?\s+"
_RM_RECURSIVE = rf"(?={_RM_ARGS}(?:-[a-z]*r[a-z]*|--r[a-z]*)(?![^\s;&|]))"
_RM_FORCE = rf"(?={_RM_ARGS}(?:-[a-z]*f[a-z]*|--f[a-z]*)(?![^\s;&|]))"

APPROVAL_RULES: tuple[CompiledRule, ...] = (
    _rule("git-push", rf"\bgit\s+(?:{_GIT_OPTION}\s+){{0,10}}+push\b", CAT7, "approve"),
    _rule(
        "commit-to-main",
        r"\bcommit(?:s|ted|ting)?\s+(?:[\w'-]+\s+){0,3}?(?:(?:directly|straight)\s+)?(?:to|into|onto|on)\s+"
        r"(?:the\s+)?(?:main|master|trunk|production)\b",
        CAT7,
        "approve",
    ),
    _rule("deploy", r"\b(?:re-?)?deploy\w*", CAT7, "approve"),
    _rule("publish", r"\b(?:re-?)?publish\w*", CAT7, "approve"),
    _rule("rm-rf", rf"\brm{_RM_RECURSIVE}{_RM_FORCE}(?![^\s;&|])", CAT7, "approve"),
    _rule("dotenv", r"(?<![\w.])\.env\b", CAT7, "approve"),
    _rule("production-config", r"\bproduction\s+config\b", CAT7, "approve"),
    _rule("secrets", r"\bsecrets?\b", PROMISE_FIELDS, "approve"),
)

# Key shapes are case-sensitive by nature ((?-i:...)); the PEM header is not.
SECRET_RULES: tuple[CompiledRule, ...] = (
    _rule(
        "private-key",
        r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----",
        CAT7,
        "block",
        secret=True,
    ),
    _rule("anthropic-api-key", r"(?-i:\bsk-ant-[A-Za-z0-9_-]{16,})", CAT7, "block", secret=True),
    _rule("openai-api-key", r"(?-i:\bsk-(?!ant-)[A-Za-z0-9_-]{16,})", CAT7, "block", secret=True),
    _rule("aws-access-key", r"(?-i:\b(?:AKIA|ASIA)[0-9A-Z]{16}\b)", CAT7, "block", secret=True),
    _rule(
        "github-token",
        r"(?-i:\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}))",
        CAT7,
        "block",
        secret=True,
    ),
    _rule("slack-token", r"(?-i:\bxox[bp]-[A-Za-z0-9-]{10,})", CAT7, "block", secret=True),
)

_SECRET_PREFIX = re.compile(rf"^(?:-----BEGIN|{KEY_PREFIXES})")


def redact(text: str, match: re.Match[str] | tuple[int, int]) -> str:
    """A short masked excerpt of `text[start:end]` that is safe to log.

    Shows at most a quarter of the match and never more than 8 characters, for a recognised secret
    shape only its public prefix (`sk-`, `AKIA`, `-----BEGIN`), then `****` and the length.
    """
    start, end = match.span() if isinstance(match, re.Match) else match
    start, end = max(0, start), min(len(text), end)
    hit = text[start:end]
    prefix = _SECRET_PREFIX.match(hit)
    shown = prefix.group(0) if prefix else hit[: min(MAX_SHOWN, len(hit) // 4)]
    shown = shown[:MAX_SHOWN] if len(shown) * 2 < len(hit) else ""
    return f"{shown}****({len(hit)} chars)"


def _shown(match: re.Match[str]) -> str:
    hit = match.group(0)
    return '"' + mask_secrets(hit if len(hit) <= SHOWN_MAX else hit[: SHOWN_MAX - 1] + "…") + '"'


class GateHit(BaseModel):
    rule: str
    field: str
    action: GateAction
    excerpt: str


class GateVerdict(BaseModel):
    """The strongest hit decides: block beats approve beats pass. `hits` lists every rule that fired."""

    action: Literal["pass", "block", "approve"]
    rule: str | None = None
    field: str | None = None
    excerpt: str | None = None
    hits: list[GateHit] = []


def compile_custom(rule: GateRule) -> CompiledRule:
    """A rule from agent.toml; like the defaults it matches case-insensitively."""
    return _rule(rule.name, rule.pattern, rule.fields, rule.action)


class Gates:
    """An ordered rule set; build it with `Gates.from_config` or give rules directly."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self.rules: tuple[CompiledRule, ...] = tuple(rules)

    @classmethod
    def from_config(cls, safety: SafetyConfig | None = None) -> Gates:
        safety = safety or SafetyConfig()
        rules: list[CompiledRule] = list(SECRET_RULES)
        if safety.approval_gates == "default":
            rules.extend(dataclasses.replace(r, action="block") for r in APPROVAL_RULES)
        elif safety.approval_gates == "approve":
            rules.extend(APPROVAL_RULES)
        rules.extend(compile_custom(r) for r in safety.gates)
        return cls(rules)

    def names(self) -> list[str]:
        return [r.name for r in self.rules]

    def check(self, fields: Mapping[str, Any]) -> GateVerdict:
        """Scan the proposal's fields (strings, or objects with `.text`); non-text values are skipped."""
        hits: list[GateHit] = []
        raw: dict[str, str] = {}
        normalised: dict[str, str] = {}
        for rule in self.rules:
            for field in rule.fields:
                if field not in raw:
                    raw[field] = _text(fields.get(field))
                    normalised[field] = normalize(raw[field])
                text = raw[field] if rule.secret else normalised[field]
                if not text:
                    continue
                found = rule.regex.search(text)
                if found:
                    hits.append(
                        GateHit(
                            rule=rule.name,
                            field=field,
                            action=rule.action,
                            excerpt=redact(text, found) if rule.secret else _shown(found),
                        )
                    )
        if not hits:
            return GateVerdict(action="pass")
        top = next((h for h in hits if h.action == "block"), hits[0])
        return GateVerdict(action=top.action, rule=top.rule, field=top.field, excerpt=top.excerpt, hits=hits)


_LOOKALIKES = str.maketrans(
    # lower-case Cyrillic and Greek letters drawn like Latin ones (NFKC leaves them alone):
    # "gіt push" with a Cyrillic і must read as git push
    "аеорсухіјѕԁһӏԛԝοαεικνρτυχ",
    "aeopcyxijsdhlqwoaeikvptux",
)


_INVISIBLE = frozenset({"Cf", "Mn", "Me"})
"""Format characters (zero-width spaces, joiners) and marks (combining accents, variation selectors)."""


def normalize(text: str) -> str:
    """What a rule reads: compatibility-decomposed, format characters and combining marks (accents,
    variation selectors) dropped, recomposed (NFKC), case folded,
    Cyrillic and Greek look-alikes read as the Latin letters they imitate, every whitespace run one
    space. Secret shapes are matched on the raw text: they are case-sensitive."""
    split = unicodedata.normalize("NFKD", text)
    kept = "".join(ch for ch in split if unicodedata.category(ch) not in _INVISIBLE)
    folded = unicodedata.normalize("NFKC", kept).casefold()
    return " ".join(folded.translate(_LOOKALIKES).split())


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        value = value.get("text")
        return value if isinstance(value, str) else ""
    text = getattr(value, "text", None)
    return text if isinstance(text, str) else ""


def check_gates(fields: Mapping[str, Any], safety: SafetyConfig | None = None) -> GateVerdict:
    """One-shot convenience: build the rule set from config and check `fields`."""
    return Gates.from_config(safety).check(fields)
