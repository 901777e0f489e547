"""How long a stop takes during a long PPO update: SIGTERM 25 s into a run of tiny-t5 with 4 envs x 8 steps and
--update-epochs 200 (an update of about half a minute or more here), and the seconds until the process has saved and
exited. Before the stop took effect after the minibatch under way, it waited for the whole update (46.7 s measured).

    python benchmark/stop_latency.py
"""

import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--model", "tiny-t5", "--env-id", "BabyAI-GoToLocalS5N2-v0", "--num-envs", "4", "--num-steps", "8", "--num-minibatches", "2",
         "--update-epochs", "200", "--total-timesteps", "64", "--learning-rate", "3e-4"]

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        process = subprocess.Popen([sys.executable, os.path.join(REPO, "glam_ppo.py"), *FLAGS], cwd=folder, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
        time.sleep(25)
        process.send_signal(signal.SIGTERM)
        sent = time.time()
        process.wait()
        seconds = time.time() - sent
        (trainer,) = glob.glob(os.path.join(folder, "runs", "*", "checkpoint", "trainer.pt"))
        update = torch.load(trainer, weights_only=False).get("update")
        where = f"during the update (epoch {update['epoch']} of 200)" if update else "between updates or in a rollout"
        print(f"SIGTERM 25 s into the run: saved {where} and exited {seconds:.1f} s after the signal (exit {process.returncode})")
