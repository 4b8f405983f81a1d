"""Entity-level micro precision / recall / F1 with the conlleval definition (CoNLL-2000/2003 perl script).

A chunk starts and ends by conlleval's ``startOfChunk`` / ``endOfChunk`` rules on IOB1/IOB2/IOE tags (so an ``I-X``
after ``O`` or after another type starts a chunk, as in conlleval); a predicted chunk is correct when its type, first
and last token equal a reference chunk's. ``accuracy`` is conlleval's token accuracy. Fractions in [0, 1].
"""

import datasets
import evaluate


def _split(tag: str):
    if tag in ("O", "", "."):
        return "O", ""
    prefix, _, kind = tag.partition("-")
    if not kind:  # a bare type such as "PER": conlleval reads it as I-PER
        return "I", prefix
    return prefix, kind


def end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval's endOfChunk: does a chunk end between the previous token and this one?"""
    end = False
    if prev_tag == "E" or prev_tag == "S":
        end = True
    if prev_tag == "B" and tag in ("B", "S", "O"):
        end = True
    if prev_tag == "I" and tag in ("B", "S", "O"):
        end = True
    if prev_tag not in ("O", ".") and prev_type != type_:
        end = True
    return end


def start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval's startOfChunk: does a chunk start at this token?"""
    start = False
    if tag == "B" or tag == "S":
        start = True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        start = True
    if tag not in ("O", ".") and prev_type != type_:
        start = True
    return start


def chunks(tags) -> set:
    """The set of (type, first, last) chunks of one sentence's tag sequence."""
    found = set()
    prev_tag, prev_type, begin = "O", "", None
    for i, raw in enumerate(list(tags) + ["O"]):
        tag, type_ = _split(raw)
        if begin is not None and end_of_chunk(prev_tag, tag, prev_type, type_):
            found.add((prev_type, begin, i - 1))
            begin = None
        if start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return found


def conlleval_scores(predictions, references) -> dict:
    """Micro precision, recall, F1 over every chunk and token accuracy, for lists of tag sequences."""
    correct = guessed = gold = tokens = token_correct = 0
    for pred, ref in zip(predictions, references):
        if len(pred) != len(ref):
            raise ValueError(f"a prediction has {len(pred)} tags but its reference has {len(ref)}")
        pred_chunks, ref_chunks = chunks(pred), chunks(ref)
        correct += len(pred_chunks & ref_chunks)
        guessed += len(pred_chunks)
        gold += len(ref_chunks)
        tokens += len(ref)
        token_correct += sum(p == r for p, r in zip(pred, ref))
    precision = correct / guessed if guessed else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": token_correct / tokens if tokens else 0.0,
            "n_predicted": guessed, "n_reference": gold, "n_correct": correct}


class Conlleval(evaluate.Metric):
    """conlleval entity-level micro scores of tag sequences."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Entity-level micro precision/recall/F1 (conlleval) and token accuracy, as fractions.",
            citation="Tjong Kim Sang and De Meulder (2003), CoNLL-2003 shared task; conlleval.pl",
            inputs_description="predictions and references: lists of tag sequences (lists of strings)",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            raise ValueError("conlleval scores of an empty set are undefined")
        return conlleval_scores(predictions, references)
