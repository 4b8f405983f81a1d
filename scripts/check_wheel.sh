#!/usr/bin/env bash
# Check the package as a regular (non-editable) install sees it: build the wheel, install it into a fresh virtual
# environment, and from a folder outside the checkout run a tiny job through the CLI and through grain_bench.run,
# then load the saved model with `from grain_bench import load_pruned` in a fresh interpreter. CI runs it after the
# tests (.ci/run). Needs the package index for the dependencies (pip's cache makes a second run quick).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRAIN_BENCH_LOAD_PLUGINS=""
export GRAIN_BENCH_HOME="$work/home"  # the teachers these jobs train go there, not into the user's cache

python -m pip wheel -q --no-deps -w "$work/dist" "$repo"
wheel=$(ls "$work"/dist/grain_bench-*.whl)
python - "$wheel" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
needed = ["grain_bench/metrics/__init__.py", "grain_bench/metrics/accuracy/accuracy.py",
          "grain_bench/modeling_pruned_bert.py", "grain_bench/methods/grain.py", "grain_bench/tasks/glue.py",
          "grain_bench/leaderboard/store.py", "grain_bench/kernels/ragged_attention.c"]
missing = [n for n in needed if n not in names]
assert not missing, f"the wheel lacks {missing}"
assert any(n.endswith("licenses/LICENSE") for n in names), "the wheel lacks the LICENSE"
print(f"wheel {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files")
EOF

python -m venv "$work/venv"
pip="$work/venv/bin/python -m pip"
$pip install -q "torch==2.13.0" ${GRAIN_BENCH_TORCH_INDEX:+--index-url "$GRAIN_BENCH_TORCH_INDEX"}
$pip install -q "$wheel"

cd "$work"  # outside the checkout: every import below comes from the installed wheel
py="$work/venv/bin/python"
$py - <<'EOF'
import os, random
import grain_bench
assert "site-packages" in grain_bench.__file__, grain_bench.__file__
rng = random.Random(0)
os.makedirs("data/SST-2")
for name, n in (("train.tsv", 96), ("dev.tsv", 32)):
    with open(f"data/SST-2/{name}", "w") as out:
        out.write("sentence\tlabel\n")
        for i in range(n):
            words = ["the", "film", "was", rng.choice(("good", "great") if i % 2 else ("bad", "awful"))] * 2
            rng.shuffle(words)
            out.write(f"{' '.join(words)}\t{i % 2}\n")
EOF
"$work/venv/bin/grain-bench" --methods dense,grain --tasks sst2 --data-dir data --backbone test-bert-tiny \
    --recipe test --densities 0.5 --results cli-results -q --no-latency
$py - <<'EOF'
import grain_bench
frame = grain_bench.run(methods=["grain"], tasks=["sst2"], densities=[0.3], backbone="test-bert-tiny", recipe="test",
                        data_dir="data", results="api-results", measure_latency=False, progress=False)
assert len(frame) == 1 and frame["status"].iloc[0] == "ok", frame[["status", "error"]]
assert frame["score"].iloc[0] >= 0 and frame["artifact"].iloc[0]
open("artifact.txt", "w").write(frame["artifact"].iloc[0])
print(f"grain_bench.run: {frame['method'].iloc[0]} @ {frame['target_density'].iloc[0]}: "
      f"accuracy {frame['score'].iloc[0]:.3f}, density {frame['achieved_density'].iloc[0]:.3f}")
EOF
# both jobs fine-tuned the same teacher (task, data, backbone, recipe, seed): the second loaded the first's
entries=$(find "$GRAIN_BENCH_HOME/teachers" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | wc -l)
[ "$entries" -eq 1 ] || { echo "check_wheel: the two jobs should share one cached teacher; found $entries" >&2; exit 1; }
$py -c "
from grain_bench import load_pruned
model = load_pruned(open('artifact.txt').read())
assert model.config.id2label == {0: 'negative', 1: 'positive'}, model.config.id2label
print('load_pruned in a fresh interpreter:', type(model).__name__, sum(p.numel() for p in model.parameters()), 'parameters')
ragged = load_pruned(open('artifact.txt').read(), runtime='ragged')  # the kernel source ships in the wheel
print('load_pruned(runtime=\"ragged\"):', ragged.kernel_layers, 'attention blocks on the kernel')
"
echo "check_wheel: ok"
