"""The `structure` triplet backend: label-correct pairs from MedQuAD's own annotations, no LLM.

Positives (cache hits) ask the anchor's focus and qtype again, through other surface forms from
resources/domains/medical_forms.yaml and through the focus's synonyms:
  surface_form  -- a form of the anchor's qtype rendered with the focus;
  synonym       -- the anchor's own wording with the focus replaced by a synonym;
  synonym_form  -- a form rendered with a synonym.
Train triplets use only the bank's `train` forms; val and test use only its `heldout` forms.

Hard negatives (cache misses) are the split's own real questions, sometimes re-rendered with a form:
  same_focus_other_qtype -- same focus (same shared.comparison_key), another qtype that is not
                            confusable with the anchor's ("symptoms of X" vs "treatment of X");
  same_qtype_other_focus -- same qtype, another focus of the same semantic type (same category when
                            the anchor has no semantic type), never one that shares a CUI or synonym.
Kind 1 is preferred; kind 2 fills up. A negative is never equivalent to its anchor under
cache_embed.data.equivalence (mode "medquad": shared qtype, occurrence qtypes included, and a direct
focus link), the definition the evaluation judges cache hits by.
Everything is seeded per query: Random(f"{seed}:{query_id}").
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import yaml

from cache_embed.common.cli import PipelineError
from cache_embed.common.text import comparison_key, normalise_whitespace
from cache_embed.data.equivalence import EquivalenceIndex
from cache_embed.generate.triplet_quality import Candidate

FOCUS = "{focus}"
SPLIT_FORMS = {"train": "train", "val": "heldout", "test": "heldout"}
# Extra candidates beyond the requested counts, so that quality filters rarely leave a query short.
SPARE_POSITIVES = 2
SPARE_NEGATIVES = 1

_ABBREVIATION = re.compile(r"^[^a-z]{1,8}$")
_HAS_LETTER = re.compile(r"[^\W\d_]")


# ---------------------------------------------------------------------------------------- forms


def forms_problems(bank: dict) -> list[str]:
    """Everything wrong with a forms bank, as messages; empty when it is usable."""
    problems: list[str] = []
    qtypes = bank.get("qtypes") if isinstance(bank, dict) else None
    if not isinstance(qtypes, dict) or not qtypes:
        return ["the file needs a non-empty `qtypes:` mapping of qtype -> {keywords, train, heldout}"]
    for qtype, entry in qtypes.items():
        if not isinstance(entry, dict):
            problems.append(f"qtype {qtype!r}: expected a mapping with keywords, train and heldout")
            continue
        keywords = entry.get("keywords") or []
        try:
            patterns = [re.compile(k, re.IGNORECASE) for k in keywords]
        except re.error as error:
            problems.append(f"qtype {qtype!r}: keyword is not a valid regular expression ({error})")
            continue
        if not patterns:
            problems.append(f"qtype {qtype!r}: no intent keywords")
        seen: set[str] = set()
        for part, minimum in (("train", 2), ("heldout", 1)):
            forms = entry.get(part) or []
            if len(forms) < minimum:
                problems.append(f"qtype {qtype!r}: needs at least {minimum} {part} forms, has {len(forms)}")
            for form in forms:
                if not isinstance(form, str) or not form.strip():
                    problems.append(f"qtype {qtype!r}: empty {part} form")
                    continue
                if form.count(FOCUS) != 1:
                    problems.append(f"qtype {qtype!r}: {part} form {form!r} must contain {FOCUS} once")
                key = comparison_key(form.replace(FOCUS, " focus "))
                if key in seen:
                    problems.append(f"qtype {qtype!r}: form {form!r} repeats another form")
                seen.add(key)
                rest = form.replace(FOCUS, " ")
                if patterns and not any(p.search(rest) for p in patterns):
                    problems.append(f"qtype {qtype!r}: form {form!r} has none of the intent keywords {keywords}")
    for pair in bank.get("confusable_qtypes") or []:
        if not (isinstance(pair, list) and len(pair) == 2):
            problems.append(f"confusable_qtypes: {pair!r} is not a pair of qtypes")
    return problems


def load_forms(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: forms bank not found; set generate.structure.forms to the YAML of surface forms")
    try:
        bank = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise PipelineError(f"{path}: not valid YAML ({error})") from None
    problems = forms_problems(bank)
    if problems:
        raise PipelineError(f"{path}: " + "; ".join(problems[:10]) + ("; ..." if len(problems) > 10 else ""))
    return bank


def render(form: str, focus: str) -> str:
    """Fill a form; a form written all in lower case lower-cases the focus too (typed search traffic)."""
    rest = form.replace(FOCUS, "")
    if rest == rest.lower():
        focus = focus.lower()
    return normalise_whitespace(form.replace(FOCUS, focus))


# ------------------------------------------------------------------------------------- synonyms


def filter_synonyms(record: dict, focus_keys: set[str], max_words: int, counts: Counter) -> list[str]:
    """The record's usable synonyms; each filtered one is counted in `counts` by reason."""
    focus_key = comparison_key(record.get("focus") or "")
    kept: list[str] = []
    seen = {focus_key}
    for synonym in record.get("synonyms") or []:
        text = normalise_whitespace(synonym) if isinstance(synonym, str) else ""
        key = comparison_key(text)
        if not key:
            reason = "empty"
        elif key == focus_key:
            reason = "identical_to_focus"
        elif key in seen:
            reason = "duplicate"
        elif len(text.split()) > max_words:
            reason = "too_long"
        elif any(c in text for c in "()[]{}"):
            reason = "parenthetical"
        elif " - " in text:
            reason = "heading_style"  # "Gout - wrist", "Tonsillitis - tonsillectomy": a sub-topic
        elif _ABBREVIATION.match(text) or not _HAS_LETTER.search(text):
            reason = "abbreviation"  # "LRS", "AT III": ambiguous as a question's focus
        elif key in focus_keys:
            reason = "other_focus_in_split"  # likely a related but different condition
        elif key.startswith(focus_key + " ") or key.endswith(" " + focus_key):
            reason = "narrower_than_focus"  # "X type 3", "familial X": a subtype, not the same question
        else:
            reason = None
        if reason:
            counts[reason] += 1
            continue
        seen.add(key)
        kept.append(text)
    return kept


# -------------------------------------------------------------------------------------- backend


class StructureBackend:
    """Candidates for one split from its own annotations. `records` is the whole split (the pool of
    negatives and of focus names); `generate` is asked about any subset of it (a shard)."""

    name = "structure"
    model = None

    def __init__(self, records: list[dict], split: str, forms: dict, *, seed: int, max_synonym_words: int):
        if split not in SPLIT_FORMS:
            raise PipelineError(f"unknown split {split!r}; expected one of {sorted(SPLIT_FORMS)}")
        self.split = split
        self.seed = seed
        self.max_synonym_words = max_synonym_words
        part = SPLIT_FORMS[split]
        self.forms = {qtype: list(entry.get(part) or []) for qtype, entry in forms["qtypes"].items()}
        self.confusable = {frozenset(pair) for pair in forms.get("confusable_qtypes") or []}
        self.synonyms_filtered: Counter = Counter()
        self.skipped: Counter = Counter()
        self.missing_forms: Counter = Counter()
        self.records = records
        self.focus_key = [comparison_key(r.get("focus") or "") for r in records]
        self.query_key = [comparison_key(r.get("query") or "") for r in records]
        self.focus_keys = {k for k in self.focus_key if k}
        self.by_focus: dict[str, list[int]] = defaultdict(list)
        self.by_qtype_semtype: dict[tuple, list[int]] = defaultdict(list)
        self.by_qtype_category: dict[tuple, list[int]] = defaultdict(list)
        self.cuis = [frozenset(r.get("cuis") or []) for r in records]
        self.synonym_keys = [
            frozenset(comparison_key(s) for s in r.get("synonyms") or [] if isinstance(s, str)) for r in records
        ]
        for index, record in enumerate(records):
            if not self.focus_key[index] or not record.get("qtype"):
                continue
            self.by_focus[self.focus_key[index]].append(index)
            for semtype in record.get("semantic_types") or []:
                self.by_qtype_semtype[(record["qtype"], semtype)].append(index)
            if record.get("category"):
                self.by_qtype_category[(record["qtype"], record["category"])].append(index)
        self.index_of = {r["id"]: i for i, r in enumerate(records)}
        self.equivalence = EquivalenceIndex(records, mode="medquad")
        self.equivalent_negatives_skipped = 0
        self._pools: dict[tuple, list[int]] = {}
        annotated = sum(1 for i, r in enumerate(records) if self.focus_key[i] and r.get("qtype"))
        if records and not annotated:
            raise PipelineError(
                "the structure backend needs MedQuAD-style `qtype` and `focus` annotations and this split has "
                "none; set the domain's backend to vllm or openai"
            )

    def close(self) -> None:
        pass

    # -- positives

    def _forms_for(self, qtype: str) -> list[str]:
        forms = self.forms.get(qtype) or []
        if not forms:
            self.missing_forms[qtype] += 1
        return forms

    def positives(self, record: dict, synonyms: list[str], count: int, rng: random.Random) -> list[Candidate]:
        focus, query, qtype = record["focus"], record["query"], record["qtype"]
        forms = self._forms_for(qtype)
        pools: dict[str, list[Candidate]] = {}
        surface = [Candidate(render(f, focus), "surface_form", qtype) for f in forms]
        rng.shuffle(surface)
        pools["surface_form"] = surface
        position = query.casefold().find(focus.casefold())
        if synonyms and position >= 0:
            direct = [
                Candidate(normalise_whitespace(query[:position] + s + query[position + len(focus) :]), "synonym", qtype)
                for s in synonyms
            ]
            rng.shuffle(direct)
            pools["synonym"] = direct
        if synonyms and forms:
            pairs = [(f, s) for f in forms for s in synonyms]
            rng.shuffle(pairs)
            pools["synonym_form"] = [
                Candidate(render(f, s), "synonym_form", qtype) for f, s in pairs[: count + SPARE_POSITIVES]
            ]
        # Round-robin over the kinds (in a seeded order) so each query mixes forms and synonyms.
        kinds = [k for k in pools if pools[k]]
        rng.shuffle(kinds)
        result: list[Candidate] = []
        depth = 0
        while len(result) < count + SPARE_POSITIVES and any(depth < len(pools[k]) for k in kinds):
            for kind in kinds:
                if depth < len(pools[kind]):
                    result.append(pools[kind][depth])
            depth += 1
        return result[: count + SPARE_POSITIVES]

    # -- negatives

    def _negative_text(self, other: dict, focus: str, rng: random.Random, rerender: bool) -> str:
        """The other question's real text, or (when `rerender`) a form of its qtype with `focus`."""
        forms = self.forms.get(other["qtype"]) or []
        if rerender and forms:
            return render(rng.choice(forms), focus)
        return other["query"]

    def _related(self, index: int, other: int) -> bool:
        """True when two records may be about the same thing under different names."""
        return (
            self.focus_key[index] == self.focus_key[other]
            or bool(self.cuis[index] & self.cuis[other])
            or self.focus_key[other] in self.synonym_keys[index]
            or self.focus_key[index] in self.synonym_keys[other]
        )

    def _equivalent(self, index: int, other: int) -> bool:
        """The same question by the evaluation's definition (counted: such a record is never a negative)."""
        same = self.equivalence.equivalent(self.records[index]["id"], self.records[other]["id"])
        self.equivalent_negatives_skipped += same
        return same

    def negatives(self, index: int, count: int, rng: random.Random) -> list[Candidate]:
        record = self.records[index]
        qtype, focus = record["qtype"], record["focus"]
        wanted = count + SPARE_NEGATIVES
        result: list[Candidate] = []
        # (1) same focus, another (non-confusable) qtype: one question per other qtype first.
        by_qtype: dict[str, list[int]] = defaultdict(list)
        for other in self.by_focus.get(self.focus_key[index], []):
            other_qtype = self.records[other]["qtype"]
            if other_qtype == qtype or frozenset((qtype, other_qtype)) in self.confusable:
                continue
            if self.query_key[other] == self.query_key[index]:
                continue
            if self._equivalent(index, other):
                continue
            by_qtype[other_qtype].append(other)
        other_qtypes = sorted(by_qtype)
        rng.shuffle(other_qtypes)
        for position, other_qtype in enumerate(other_qtypes[:wanted]):
            other = rng.choice(by_qtype[other_qtype])
            # Alternate real wording and re-rendered forms so style never tells hits from misses.
            text = self._negative_text(self.records[other], focus, rng, rerender=position % 2 == 1)
            result.append(
                Candidate(text, "same_focus_other_qtype", other_qtype, {"query_id": self.records[other]["id"]})
            )
        if len(result) >= wanted:
            return result
        # (2) same qtype, another focus of the same semantic type (or category).
        pool = self._pool(qtype, tuple(record.get("semantic_types") or ()), record.get("category"))
        chosen: set[str] = set()
        tries = 0
        while pool and len(result) < wanted and tries < 8 * wanted:
            tries += 1
            other = pool[rng.randrange(len(pool))]
            if self._related(index, other) or self.focus_key[other] in chosen or self._equivalent(index, other):
                continue
            chosen.add(self.focus_key[other])
            other_record = self.records[other]
            text = self._negative_text(other_record, other_record["focus"], rng, rerender=len(result) % 2 == 1)
            result.append(Candidate(text, "same_qtype_other_focus", qtype, {"query_id": other_record["id"]}))
        return result

    def _pool(self, qtype: str, semantic_types: tuple, category: str | None) -> list[int]:
        """Questions of `qtype` sharing a semantic type (or, without one, the category)."""
        key = (qtype, semantic_types, category)
        if key not in self._pools:
            if semantic_types:
                pool = sorted({i for s in semantic_types for i in self.by_qtype_semtype.get((qtype, s), [])})
            elif category:
                pool = self.by_qtype_category.get((qtype, category), [])
            else:
                pool = []
            self._pools[key] = pool
        return self._pools[key]

    # -- entry point

    def candidates(self, record: dict, paraphrases: int, negatives: int) -> tuple[list[Candidate], list[Candidate]]:
        """(positives, negatives) for one query of the split; empty lists when it cannot have any."""
        index = self.index_of.get(record.get("id"))
        if index is None:
            raise PipelineError(f"query {record.get('id')!r} is not in the split the structure backend was built from")
        if not record.get("qtype"):
            self.skipped["no_qtype"] += 1
            return [], []
        if not self.focus_key[index]:
            self.skipped["no_focus"] += 1
            return [], []
        rng = random.Random(f"{self.seed}:{record['id']}")
        synonyms = filter_synonyms(record, self.focus_keys, self.max_synonym_words, self.synonyms_filtered)
        return self.positives(record, synonyms, paraphrases, rng), self.negatives(index, negatives, rng)


def forms_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
