"""A stand-in training entrypoint for the local backend's tests (stdlib only, starts fast).

Reads its hyperparameters from SM_HPS (falling back to input/config/hyperparameters.json) like
the real one, and behaves as they say:

    epochs (3)            epochs to "train"; prints 4 progress lines and one metric line per epoch
    maps ("0.2,0.5,0.4")  validation:mAP of each epoch (cycled)
    fail_with             write this to output/failure and exit 1 (after the epochs)
    raise_error           raise RuntimeError(this) (after the epochs)
    sleep (0)             seconds to sleep after the first epoch (for kill / stop / Ctrl-C tests)
    handle_sigterm        on SIGTERM: write checkpoints/sigterm.txt, print, exit 143 (as train.py does)
    ignore_sigterm        ignore SIGTERM (so only SIGKILL ends it)

Always: dumps its environment, cwd, argv and hyperparameters to $SM_OUTPUT_DATA_DIR/seen.json
(before training), writes checkpoints/last.txt after each epoch (and resumes from it), and
model/model.txt at the end.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path


def hyperparameters():
    if "SM_HPS" in os.environ:
        return json.loads(os.environ["SM_HPS"])
    return json.loads((Path(os.environ["SM_INPUT_CONFIG_DIR"]) / "hyperparameters.json").read_text())


def main():
    hps = hyperparameters()
    checkpoints = Path(os.environ.get("ODORCH_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
    model_dir = Path(os.environ["SM_MODEL_DIR"])
    failure = Path(os.environ["SM_OUTPUT_DIR"]) / "failure"
    epochs = int(hps.get("epochs", 3))
    maps = [float(x) for x in str(hps.get("maps", "0.2,0.5,0.4")).split(",")]

    last = checkpoints / "last.txt"
    start = int(last.read_text()) if last.exists() else 0
    seen = {
        "env": {k: v for k, v in os.environ.items() if k.startswith(("SM_", "ODORCH_", "PYTHON", "OMP_", "FAKE_"))},
        "cwd": os.getcwd(),
        "argv": sys.argv,
        "hps": hps,
        "resumed_from": start,
        "hyperparameters_json": json.loads((Path(os.environ["SM_INPUT_CONFIG_DIR"]) / "hyperparameters.json").read_text()),
    }
    (Path(os.environ["SM_OUTPUT_DATA_DIR"]) / "seen.json").write_text(json.dumps(seen))
    print(f"fake entrypoint: {epochs} epochs, resuming after epoch {start}")

    if hps.get("handle_sigterm"):
        def on_term(signum, frame):
            (checkpoints / "sigterm.txt").write_text("checkpoint on SIGTERM\n")
            print("got SIGTERM, checkpoint saved", flush=True)
            sys.exit(128 + signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_term)
    if hps.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    for epoch in range(start + 1, epochs + 1):
        for step in range(1, 5):
            done = ((epoch - 1) * 4 + step) / (epochs * 4) * 100
            print(f"train:progress={done:.1f}")
        m = maps[(epoch - 1) % len(maps)]
        print(f"epoch={epoch}/{epochs} train:loss={1.0 / epoch:.4f} validation:mAP={m} validation:mAP50={m + 0.25:.6f}")
        last.write_text(str(epoch))
        if epoch == start + 1 and float(hps.get("sleep", 0)):
            print("sleeping", flush=True)
            time.sleep(float(hps["sleep"]))

    if hps.get("fail_with"):
        failure.write_text(str(hps["fail_with"]))
        print("about to fail", file=sys.stderr)
        sys.exit(1)
    if hps.get("raise_error"):
        raise RuntimeError(hps["raise_error"])
    (model_dir / "model.txt").write_text("weights\n")
    print("done")


if __name__ == "__main__":
    main()
