"""Writes the small canonical-format fixtures under tests/data (run once; the outputs are committed).

python tests/data/make_fixtures.py
Synthetic sentences from a fixed-seed generator, in the exact layouts of the GLUE download (TSV folders, CoLA
without a header, MRPC with a BOM, STS-B 10 columns, MNLI dev_matched/dev_mismatched), SQuAD v1.1 JSON
(train-v1.1.json and dev-v1.1.json) and CoNLL-2003 column files with IOB1 tags.
"""

import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
WORDS = ["the", "cat", "dog", "bird", "man", "woman", "child", "house", "car", "tree", "river", "city", "film", "book",
         "song", "game", "day", "night", "red", "blue", "old", "new", "big", "small", "good", "bad", "happy", "sad",
         "fast", "slow", "runs", "sees", "likes", "eats", "reads", "plays", "writes", "finds"]
GOOD, BAD = ["great", "wonderful", "fine", "lovely"], ["awful", "boring", "poor", "dull"]


def sentence(rng, n=None):
    return " ".join(rng.choice(WORDS) for _ in range(n or rng.randint(3, 7))).capitalize() + "."


def write(path, lines, bom=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as handle:
        handle.write("\n".join(lines) + "\n")


def glue(rng, root):
    sizes = {"train": 40, "dev": 12}
    for split, n in sizes.items():
        # CoLA: no header; source, label, author mark (blank when acceptable... GLUE keeps "*" only in the raw set)
        write(f"{root}/CoLA/{split}.tsv", [f"gj04\t{i % 2}\t{'' if i % 2 else '*'}\t{sentence(rng)}" for i in range(n)])
        rows = ["sentence\tlabel"]
        for i in range(n):
            label = i % 2
            rows.append(f"{sentence(rng, 3)} {rng.choice(GOOD if label else BAD)} .\t{label}")
        write(f"{root}/SST-2/{split}.tsv", rows)
        rows = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        for i in range(n):
            a = sentence(rng)
            rows.append(f"{i % 2}\t{1000 + i}\t{2000 + i}\t{a}\t{a if i % 2 else sentence(rng)}")
        write(f"{root}/MRPC/{split}.tsv", rows, bom=True)
        rows = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
        for i in range(n):
            rows.append(f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{sentence(rng)}\t{sentence(rng)}"
                        f"\t{(i * 0.37) % 5:.3f}")
        write(f"{root}/STS-B/{split}.tsv", rows)
        rows = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"]
        for i in range(n):
            q = sentence(rng)[:-1] + "?"
            rows.append(f"{i}\t{2 * i}\t{2 * i + 1}\t{q}\t{q if i % 2 else sentence(rng)[:-1] + '?'}\t{i % 2}")
        write(f"{root}/QQP/{split}.tsv", rows)
        rows = ["index\tquestion\tsentence\tlabel"]
        for i in range(n):
            rows.append(f"{i}\tWhat {sentence(rng)[:-1].lower()}?\t{sentence(rng)}\t"
                        f"{'entailment' if i % 2 else 'not_entailment'}")
        write(f"{root}/QNLI/{split}.tsv", rows)
        rows = ["index\tsentence1\tsentence2\tlabel"]
        for i in range(n):
            rows.append(f"{i}\t\"{sentence(rng)}\" he said.\t{sentence(rng)}\t"
                        f"{'entailment' if i % 2 else 'not_entailment'}")
        write(f"{root}/RTE/{split}.tsv", rows)
    labels = ["entailment", "neutral", "contradiction"]
    mnli_train = ["index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse"
                  "\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"]
    for i in range(40):
        a, b, label = sentence(rng), sentence(rng), labels[i % 3]
        mnli_train.append(f"{i}\t{i}\t{i}e\tfiction\t( {a} )\t( {b} )\t(ROOT {a})\t(ROOT {b})\t{a}\t{b}"
                          f"\t{label}\t{label}")
    write(f"{root}/MNLI/train.tsv", mnli_train)
    head = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse"
            "\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")
    for name, genre in (("dev_matched", "fiction"), ("dev_mismatched", "letters")):
        rows = [head]
        for i in range(8):
            a, b, label = sentence(rng), sentence(rng), labels[i % 3]
            rows.append(f"{i}\t{i}\t{i}e\t{genre}\t( {a} )\t( {b} )\t(ROOT {a})\t(ROOT {b})\t{a}\t{b}"
                        f"\t{label}\t{label}\t{label}\t{label}\t{label}\t{label}")
        write(f"{root}/MNLI/{name}.tsv", rows)


def squad(rng, root):
    names = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank"]
    cities = ["Paris", "Oslo", "Rome", "Lima", "Kyiv", "Quito"]

    def article(a):
        paragraphs = []
        for p in range(2):
            name, city, year = rng.choice(names), rng.choice(cities), rng.randint(1900, 2000)
            filler = " ".join(sentence(rng) for _ in range(2))
            context = f"{filler} {name} was born in {city} in {year}. {sentence(rng)}"
            qas = []
            for q, (question, answer) in enumerate(((f"Where was {name} born?", city),
                                                    (f"When was {name} born?", str(year)),
                                                    (f"Who was born in {city}?", name))):
                qas.append({"id": f"a{a}p{p}q{q}", "question": question,
                            "answers": [{"text": answer, "answer_start": context.index(f"{answer}", len(filler))}]
                            * (1 if q else 2)})
            paragraphs.append({"context": context, "qas": qas})
        return {"title": f"Article_{a}", "paragraphs": paragraphs}

    for name, count, offset in (("train-v1.1.json", 6, 0), ("dev-v1.1.json", 6, 100)):
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, name), "w", encoding="utf-8") as handle:
            json.dump({"data": [article(offset + a) for a in range(count)], "version": "1.1"}, handle)


def conll(rng, root):
    entities = {"PER": ["John Smith", "Mary", "Ali Khan"], "LOC": ["Germany", "New York", "Paris"],
                "ORG": ["Reuters", "European Union", "IBM"], "MISC": ["German", "Olympic Games"]}

    def sentence_lines():
        lines, prev_type = [], None
        for _ in range(rng.randint(2, 4)):
            if rng.random() < 0.6:
                kind = rng.choice(sorted(entities))
                words = rng.choice(entities[kind]).split()
                for j, word in enumerate(words):
                    # IOB1: B- only when an entity directly follows one of the same type
                    tag = ("B-" if j == 0 and prev_type == kind else "I-") + kind
                    lines.append(f"{word} NNP I-NP {tag}")
                prev_type = kind
            else:
                for word in sentence(rng, rng.randint(1, 3))[:-1].lower().split():
                    lines.append(f"{word} NN I-NP O")
                prev_type = None
        lines.append(". . O O")
        return lines

    for name, n in (("train.txt", 40), ("valid.txt", 12), ("test.txt", 12)):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for i in range(n):
            lines += sentence_lines() + [""]
            if i == n // 2:
                lines += ["-DOCSTART- -X- -X- O", ""]
        write(os.path.join(root, name), lines[:-1])


if __name__ == "__main__":
    rng = random.Random(6)
    glue(rng, os.path.join(HERE, "glue"))
    squad(rng, os.path.join(HERE, "squad"))
    conll(rng, os.path.join(HERE, "conll2003"))
