"""DRRN (He et al. 2016), the paper's baseline, on BabyAI-Text, in one file.

A Deep Reinforcement Relevance Network reads the GLAM prompt (the actions, the goal, the last observations and actions)
and each action string, and gives Q(s, a) for every admissible action: a shared embedding (128); one GRU (128) over the
prompt's tokens and one over the action's, each taken at its last token; the two concatenated, Linear(256->128), ReLU,
Linear(128->1). It acts by sampling from softmax(Q) over the actions, and learns by Q-learning from a uniform replay:
target r + gamma max_a' Q(s', a') from the same network (no target network), Huber loss, one gradient step of 64
transitions after every 4 steps of all the envs. As the authors ran it (their experiments/agents/drrn/{model,drrn}.py,
taken from microsoft/tdqn): gamma 0.9, Adam lr 1e-4, gradients clipped to norm 5, replay of 5M transitions, 32 envs,
rewards x20 as for GLAM, and a time-limit end treated as terminal (no bootstrap), as their `done` did.

    OMP_NUM_THREADS=1 python baselines/drrn.py                       # the paper's run: MixedTrainLocal, 1.5M frames
    python baselines/drrn.py --resume runs/<run> --total-timesteps N  # continue or extend a run

Writes to runs/<env>__drrn__<seed>__<time>/: TensorBoard logs, episodes.csv (frames,return,length,success per training
episode), checkpoint/ (every --save-interval iterations and at the end) and results.json (the final policy on
--eval-episodes levels that no training env plays, seeds 10**9 + k). A stop (Ctrl-C, SIGTERM) saves a checkpoint after
the current iteration; one during the evaluation just ends the process, and --resume of a run that has all its frames
but no results.json runs the evaluation.

Differs from the original:
- Tokens: the authors tokenised with their trained SentencePiece model, unigram_8k.model, which is not installable here
  (their .vocab lists the pieces); this file uses a word-level tokenizer, the words and marks of BabyAI-Text
  (glam_ppo.py's VOCABULARY_TEXT).
- The prompt: after an episode ends, their history is cleared and the new episode's first observation is never added,
  so every episode's first prompt has no observation; here it has it (glam_ppo.py's TextVecEnv, as for GLAM).
- Levels: a Mixed level draws its task kind at every reset (the authors' envs drew it once per env, before seeding);
  env i's first level is seed + i (the authors': 100 x seed + i), so --seed is at most 10**8, below the evaluation levels.
- Replay sampling draws from numpy's Generator (theirs: a RandomState with a fixed seed); the capacity is rounded up to
  whole steps of all the envs; a transition's next state is stored once, as the next step's prompt.
- charts/success_rate is each training episode's success (0 or 1), as glam_ppo.py logs it; evaluation samples from
  softmax(Q) as training does.
"""

import contextlib
import csv
import ctypes
import io
import json
import math
import os
import pickle
import random
import re
import shlex
import shutil
import signal
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT
from minigrid.envs.babyai.core.roomgrid_level import RejectSampling, RoomGridLevel
from minigrid.envs.babyai.core.verifier import (AfterInstr, BeforeInstr, GoToInstr, ObjDesc, OpenInstr, PickupInstr,
                                                PutNextInstr)
from minigrid.envs.babyai.goto import GoToLocal
from tqdm import tqdm


@dataclass
class Args:
    env_id: str = "BabyAI-MixedTrainLocal-v0"
    """the id of the BabyAI-Text level"""
    num_envs: int = 32
    """the number of parallel environments"""
    total_timesteps: int = 1_500_000
    """total frames of the experiment"""
    seed: int = 1
    """seed of the experiment"""
    learning_rate: float = 1e-4
    """the learning rate of Adam"""
    gamma: float = 0.9
    """the discount factor gamma"""
    batch_size: int = 64
    """transitions per gradient step"""
    buffer_size: int = 5_000_000
    """the replay memory's capacity in transitions (the authors' memory_size; uniform sampling, the oldest dropped)"""
    train_frequency: int = 4
    """steps of all the envs between two gradient steps (one iteration: num_envs x train_frequency frames; the
    authors': their frames per update / their number of envs)"""
    max_grad_norm: float = 5.0
    """the maximum norm for the gradient clipping"""
    reward_scale: float = 20.0
    """training reward = this x the env reward (the logged episodic returns are these)"""
    num_observations: int = 3
    """observations in the prompt, with the actions between them (the paper's 3)"""
    save_interval: int = 500
    """write a checkpoint every this many iterations (and always at the end)"""
    resume: str | None = None
    """continue the run saved in this folder (runs/<run>); only --total-timesteps and the evaluation and logging flags
    may change"""
    eval_episodes: int = 1000
    """evaluation episodes of the final policy, on the levels of seeds 10**9 + k"""
    window_frames: int = 50_000
    """results.json's training success rate is given in windows of this many frames"""
    cuda: bool = True
    """if toggled, cuda will be enabled when available"""
    exp_name: str = "drrn"
    """the name of this experiment"""

    # to be filled in runtime: the number of iterations, --total-timesteps // (num_envs x train_frequency)
    num_iterations: tyro.conf.Suppress[int] = 0


# -----------------------------------------------------------------------------------------------------------------
# Tokens: words and punctuation marks of BabyAI-Text (differs from the original: no SentencePiece model)
# -----------------------------------------------------------------------------------------------------------------

WORD = re.compile(r"\w+|[^\w\s]")


def word_vocabulary() -> dict[str, int]:
    """Token ids: 0 padding, 1 unknown, then every word and mark of VOCABULARY_TEXT."""
    return {word: index for index, word in enumerate(["<pad>", "<unk>", *dict.fromkeys(WORD.findall(VOCABULARY_TEXT))])}


def tokenize(text: str, vocabulary: dict[str, int]) -> np.ndarray:
    return np.array([vocabulary.get(word, 1) for word in WORD.findall(text)], dtype=np.int16)


def padded(sequences, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, longest] token ids, each sequence left-padded with 0s so that all end at the last column, on device; and the
    lengths."""
    lengths = torch.tensor([len(sequence) for sequence in sequences])
    tokens = np.zeros((len(sequences), int(lengths.max())), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        tokens[row, tokens.shape[1] - len(sequence) :] = sequence
    return torch.from_numpy(tokens).to(device), lengths


# -----------------------------------------------------------------------------------------------------------------
# The network: Q(s, a) for every admissible action
# -----------------------------------------------------------------------------------------------------------------


class DRRN(nn.Module):
    def __init__(self, vocab_size: int, embedding_dim: int = 128, hidden_dim: int = 128):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.obs_encoder = nn.GRU(embedding_dim, hidden_dim, batch_first=True)
        self.act_encoder = nn.GRU(embedding_dim, hidden_dim, batch_first=True)
        self.hidden = nn.Linear(2 * hidden_dim, hidden_dim)
        self.act_scorer = nn.Linear(hidden_dim, 1)

    def encode(self, rnn: nn.GRU, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, hidden]: the GRU's state after each sequence's last token, by nn.GRU's equations (torch's gate order r, z, n):

            r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
            z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
            n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
            h' = (1 - z) * n + z * h

        run here step by step (torch's CPU GRU is slower, and its backward over packed sequences far slower): the input
        projection W_i x + b_i once per vocabulary word; the sequences, longest first and left-padded, all end at the last
        step, and step t runs only the rows that have begun (a row begins with h = 0). tests/test_drrn.py's
        test_batched_q_values_equal_one_pass_per_prompt_and_action checks it equals nn.GRU."""
        order, hidden = torch.argsort(lengths, descending=True, stable=True), rnn.hidden_size
        w_hh_rz, w_hh_n = rnn.weight_hh_l0[: 2 * hidden].t(), rnn.weight_hh_l0[2 * hidden :].t()
        bias = torch.cat([rnn.bias_ih_l0[: 2 * hidden] + rnn.bias_hh_l0[: 2 * hidden], rnn.bias_ih_l0[2 * hidden :]])
        inputs = F.linear(self.embedding.weight, rnn.weight_ih_l0, bias)[tokens[order.to(tokens.device)].T]  # [L, B, 3 hidden]
        rows_begun = (lengths[order][None] >= torch.arange(tokens.shape[1], 0, -1)[:, None]).sum(1).tolist()  # per step
        h = inputs.new_zeros(0, hidden)
        # unbind, not inputs[step]: an index's backward writes a gradient of the whole [L, B, 3 hidden] at every step
        for step_inputs, rows in zip(inputs.unbind(0), rows_begun):
            if rows > len(h):
                h = torch.cat([h, h.new_zeros(rows - len(h), hidden)])
            reset, update = torch.sigmoid(torch.addmm(step_inputs[:rows, : 2 * hidden], h, w_hh_rz)).chunk(2, 1)
            hidden_n = torch.addmm(rnn.bias_hh_l0[2 * hidden :], h, w_hh_n)
            candidate = torch.tanh(torch.addcmul(step_inputs[:rows, 2 * hidden :], reset, hidden_n))
            h = torch.lerp(candidate, h, update)  # (1 - z) n + z h
        return h[torch.argsort(order).to(h.device)]

    def forward(self, prompts, action_tokens) -> torch.Tensor:
        """[B, A] Q values of every prompt of `prompts` (tokens, lengths) with each action of `action_tokens` (encoded
        once)."""
        states, acts = self.encode(self.obs_encoder, *prompts), self.encode(self.act_encoder, *action_tokens)
        pairs = torch.cat([states[:, None].expand(-1, len(acts), -1), acts[None].expand(len(states), -1, -1)], dim=-1)
        return self.act_scorer(F.relu(self.hidden(pairs))).squeeze(-1)


def act(network: DRRN, prompts, action_tokens) -> torch.Tensor:
    """A sample from softmax(Q) over the actions, for each prompt (no epsilon, as the authors), drawn on the CPU (from
    torch's CPU generator, which checkpoints save, so that CPU and GPU runs sample alike and resume exactly)."""
    with torch.no_grad():
        return torch.multinomial(network(prompts, action_tokens).softmax(-1).cpu(), 1).squeeze(-1)


class Replay:
    """Uniform replay of token ids. Block k holds every env's prompt at one step (concatenated, int16) with the action
    then taken, the reward and done; a transition's next state is the same env's prompt in block k + 1."""

    def __init__(self, capacity: int, num_envs: int, seed: int):
        self.num_envs, self.slots = num_envs, -(-capacity // num_envs) + 1
        self.tokens, self.lengths = [None] * self.slots, np.zeros((self.slots, num_envs), dtype=np.int32)
        self.actions = np.zeros((self.slots, num_envs), dtype=np.int64)
        self.rewards = np.zeros((self.slots, num_envs), dtype=np.float32)
        self.dones = np.zeros((self.slots, num_envs), dtype=bool)
        self.position, self.filled, self.rng = 0, 0, np.random.default_rng(seed)

    def __len__(self):
        return self.filled * self.num_envs

    def put_prompts(self, sequences):
        """The current prompts (token ids), the states of the next step's transitions."""
        self.tokens[self.position] = np.concatenate(sequences)
        self.lengths[self.position] = [len(sequence) for sequence in sequences]

    def prompt(self, block: int, row: int) -> np.ndarray:
        start = self.lengths[block, :row].sum()
        return self.tokens[block][start : start + self.lengths[block, row]]

    def current(self) -> list[np.ndarray]:
        return [self.prompt(self.position, row) for row in range(self.num_envs)]

    def add(self, actions, rewards, dones, next_prompts):
        block = self.position
        self.actions[block], self.rewards[block], self.dones[block] = actions, rewards, dones
        self.position, self.filled = (block + 1) % self.slots, min(self.filled + 1, self.slots - 1)
        self.put_prompts(next_prompts)

    def sample(self, size: int):
        """(states, actions, rewards, dones, next states) of `size` distinct transitions, uniformly."""
        picks = self.rng.choice(len(self), size, replace=False)
        # pick p is env p % num_envs's transition in the (p // num_envs + 1)-th newest complete block, the one before
        # `position` (which holds only the current prompts); its next state is in the block after it
        blocks, rows = (self.position - 1 - picks // self.num_envs) % self.slots, picks % self.num_envs
        states = [self.prompt(block, row) for block, row in zip(blocks, rows)]
        next_states = [self.prompt((block + 1) % self.slots, row) for block, row in zip(blocks, rows)]
        return states, self.actions[blocks, rows], self.rewards[blocks, rows], self.dones[blocks, rows], next_states


def td_step(args: Args, network: DRRN, optimizer, replay: Replay, action_tokens, device) -> tuple[float, float]:
    """One gradient step on a uniform batch: Huber loss to r + gamma max_a' Q(s', a') of the same network, zero after
    an episode's end (its goal, a failure or the time limit); returns (the loss, the mean Q(s, a))."""
    states, taken, rewards, dones, next_states = replay.sample(args.batch_size)
    with torch.no_grad():
        next_q = network(padded(next_states, device), action_tokens).max(-1).values
    targets = torch.from_numpy(rewards).to(device) + args.gamma * next_q * torch.from_numpy(~dones).to(device)
    q = network(padded(states, device), action_tokens).gather(1, torch.from_numpy(taken).to(device)[:, None]).squeeze(1)
    loss = F.smooth_l1_loss(q, targets)
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(network.parameters(), args.max_grad_norm)
    optimizer.step()
    return loss.item(), q.mean().item()


def main(args: Args):
    stop = StopRequest()  # Ctrl-C or SIGTERM: save a checkpoint after the current iteration, then exit
    new_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_name = os.path.basename(os.path.normpath(args.resume)) if args.resume else new_name
    run_dir = args.resume or make_folder(os.path.join("runs", run_name), "the run folder")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    vocabulary = word_vocabulary()
    envs = TextVecEnv(args.env_id, args.num_envs, "canonical", args.reward_scale, num_observations=args.num_observations)
    action_tokens = padded([tokenize(action, vocabulary) for action in envs.actions], device)
    network = DRRN(len(vocabulary)).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=args.learning_rate)
    replay = Replay(args.buffer_size, args.num_envs, args.seed)
    global_step, start_iteration, train_time, recent_successes = 0, 1, 0.0, deque(maxlen=100)
    if args.resume:
        trainer = load_run(args, network, optimizer)
        envs, replay = pickle.loads(trainer["envs"]), trainer["replay"]
        global_step, start_iteration, train_time = trainer["global_step"], trainer["iteration"] + 1, trainer["train_time"]
        recent_successes.extend(trainer["recent_successes"])
        next_obs = replay.current()
    else:
        next_obs = [tokenize(prompt, vocabulary) for prompt in envs.reset(seed=args.seed)]
        replay.put_prompts(next_obs)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(run_dir, purge_step=global_step + 1 if args.resume else None)
    if not args.resume:
        table = "\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])
        writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    episodes_file = open_episodes(run_dir, global_step)
    episodes_csv = csv.writer(episodes_file)

    def state_after(iterations_done):  # what a checkpoint holds besides the weights and the optimizer
        return snapshot(envs=pickle.dumps(envs), replay=replay, global_step=global_step, iteration=iterations_done,
                        train_time=train_time, recent_successes=list(recent_successes))

    frames_per_iteration = args.num_envs * args.train_frequency
    progress = tqdm(total=args.num_iterations * frames_per_iteration, initial=global_step, unit="frame", dynamic_ncols=True,
                    smoothing=0)
    start_time, start_step = time.time(), global_step
    for iteration in range(start_iteration, args.num_iterations + 1):
        iteration_start = time.time()
        for _ in range(args.train_frequency):
            action = act(network, padded(next_obs, device), action_tokens)
            prompts, reward, done, finished = envs.step(action.tolist())
            next_obs = [tokenize(prompt, vocabulary) for prompt in prompts]
            # each next state is stored once, as the state of the next step's transitions (the replay's next block)
            replay.add(action.numpy(), reward, done, next_obs)
            global_step += args.num_envs
            for episode in finished:
                recent_successes.append(float(episode["success"]))
                episodes_csv.writerow([global_step, float(episode["return"]), episode["length"], int(episode["success"])])
                writer.add_scalar("charts/episodic_return", episode["return"], global_step)
                writer.add_scalar("charts/episodic_length", episode["length"], global_step)
                writer.add_scalar("charts/success_rate", float(episode["success"]), global_step)
        if len(replay) >= args.batch_size:  # learning starts at the first iteration, as the authors' (no warm-up)
            td_loss, q_values = td_step(args, network, optimizer, replay, action_tokens, device)
            writer.add_scalar("losses/td_loss", td_loss, global_step)
            writer.add_scalar("losses/q_values", q_values, global_step)
        train_time += time.time() - iteration_start

        sps = int((global_step - start_step) / (time.time() - start_time))
        writer.add_scalar("charts/SPS", sps, global_step)
        progress.update(frames_per_iteration)
        progress.set_postfix(SPS=sps, success=f"{np.mean(recent_successes):.2f}" if recent_successes else "-")
        if stop.requested or iteration % args.save_interval == 0 or iteration == args.num_iterations:
            episodes_file.flush()
            save_checkpoint(run_dir, args, network, optimizer, state_after(iteration), progress)
        if stop.requested:
            return save_on_stop(run_dir, args, network, optimizer, None, progress, writer, episodes_file)
    progress.close()
    writer.close()
    episodes_file.close()
    stop.release()

    eval_envs = TextVecEnv(args.env_id, min(args.num_envs, args.eval_episodes), "canonical", args.reward_scale,
                           num_observations=args.num_observations)

    def policy(dones):  # the action probabilities for the evaluation envs' prompts
        prompts = [tokenize(prompt, vocabulary) for prompt in eval_envs.prompts()]
        return network(padded(prompts, device), action_tokens).softmax(-1)

    write_results(args, run_dir, global_step, global_step / train_time, evaluate_policy(args, eval_envs, policy))


# =================================================================================================================
# APPENDICES: flags, logs, checkpoints, stopping, the evaluation and its results, and the code copied from glam_ppo.py
# =================================================================================================================

ARG_RANGES = {
    "seed": "[0, 100000000]", "num_envs": "[1, inf)", "total_timesteps": "[1, inf)", "learning_rate": "[0, inf)",
    "gamma": "[0, 1]", "batch_size": "[1, inf)", "buffer_size": "[1, inf)", "train_frequency": "[1, inf)",
    "max_grad_norm": "(0, inf)", "reward_scale": "(0, inf)", "num_observations": "[1, inf)", "save_interval": "[1, inf)",
    "eval_episodes": "[1, inf)", "window_frames": "[1, inf)",
}
RESUMABLE_CHANGES = {"total_timesteps", "save_interval", "resume", "eval_episodes", "window_frames", "num_iterations"}


def finish_args(args: Args) -> Args:
    check_ranges(args, ARG_RANGES)
    if not args.exp_name or os.sep in args.exp_name or "/" in args.exp_name:
        raise UsageError(f"--exp-name {args.exp_name!r} names a run folder: give a name without '/'")
    args.num_iterations = args.total_timesteps // (args.num_envs * args.train_frequency)
    if args.num_iterations == 0:
        raise UsageError(f"--total-timesteps {args.total_timesteps} is less than one iteration (--num-envs x "
                         f"--train-frequency = {args.num_envs * args.train_frequency} frames)")
    if args.batch_size > args.buffer_size:
        raise UsageError(f"--batch-size {args.batch_size} must be at most --buffer-size {args.buffer_size}")
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if 17 * args.buffer_size > memory:  # the replay's arrays are allocated whole: 17 bytes a transition, before its tokens
        raise UsageError(f"--buffer-size {args.buffer_size}: the replay's arrays alone ({17 * args.buffer_size / 2**30:.0f} GiB) "
                         f"exceed this machine's memory ({memory / 2**30:.0f} GiB); lower it")
    make_env(args.env_id)  # an unknown env id fails here, before anything is written
    return args


def parse_args(argv=None) -> Args:
    """tyro's Args; with --resume, the saved run's args are the defaults, so only flags typed again can differ."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = tyro.cli(Args, args=argv)
    if args.resume is None:
        return finish_args(args)
    try:
        saved = Args(**saved_args(args.resume))
    except TypeError as error:  # another script's run, or another version's
        unknown = f"its args.json has flags that {os.path.basename(__file__)} does not know ({one_line(error)})"
        raise UsageError(f"cannot resume {args.resume}: {unknown}") from None
    args = tyro.cli(Args, args=argv, default=saved)
    changed = [k for k, v in asdict(args).items() if v != getattr(saved, k) and k not in RESUMABLE_CHANGES]
    if changed:
        flags = ", ".join(f"--{k.replace('_', '-')} {getattr(args, k)} (run has {getattr(saved, k)})" for k in changed)
        raise UsageError(f"cannot resume {args.resume} with different settings: {flags}; drop these flags")
    return finish_args(args)


def load_run(args: Args, network: DRRN, optimizer) -> dict:
    """The weights, the optimizer and the random streams from --resume's newest checkpoint that loads (one that does
    not is named in one line, and the run goes on from the one before it); its trainer state (counters, envs, replay)."""
    folders = checkpoint_folders(args.resume)
    for index, folder in enumerate(folders):
        try:
            weights = torch.load(os.path.join(folder, "model.pt"), map_location="cpu")
            trainer = torch.load(os.path.join(folder, "trainer.pt"), map_location="cpu", weights_only=False)
            break
        except Exception as error:  # whatever a damaged file raises
            reason = f"{type(error).__name__}: {one_line(error)}"
            if index + 1 == len(folders):
                raise UsageError(f"cannot resume {args.resume}: {folder} does not load ({reason})") from None
            print(f"{folder} does not load ({reason}); going on from {folders[index + 1]}", file=sys.stderr)
    if index > 0:  # the next save must keep the good one as checkpoint.previous: the damaged one goes where saves begin
        shutil.rmtree(os.path.join(args.resume, "checkpoint.tmp"), ignore_errors=True)
        os.rename(folders[0], os.path.join(args.resume, "checkpoint.tmp"))
    check_frames_left(args, trainer)
    network.load_state_dict(weights)
    optimizer.load_state_dict(trainer["optimizer"])
    restore_rng(trainer["rng"])
    return trainer


EVAL_SEED = 10**9  # evaluation episode k plays the level of seed EVAL_SEED + k, which no training env is reset with


def check_frames_left(args, trainer: dict):
    """--resume refuses a --total-timesteps below the frames a run has done, or equal to them once it has results.json;
    a run with all its frames but no results.json (stopped in its last iteration or its evaluation) goes to the evaluation."""
    finished = os.path.exists(os.path.join(args.resume, "results.json"))
    if trainer["iteration"] > args.num_iterations or (trainer["iteration"] == args.num_iterations and finished):
        raise UsageError(f"--total-timesteps {args.total_timesteps}: {args.resume} has run {trainer['global_step']} frames "
                         f"already{' and has its results.json' if finished else ''}; give more")


def snapshot(**state) -> dict:
    """What a checkpoint holds besides the weights and the optimizer: `state` (envs pickled by the caller, counters) and
    the RNG states."""
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"rng": rng, **state}


def restore_rng(rng: dict):
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_checkpoint(run_dir: str, args, model: nn.Module, optimizer, state: dict, progress: tqdm | None = None):
    """Writes runs/<run>/checkpoint: model.pt (the weights), trainer.pt (the optimizer and `state`), args.json."""

    def write(folder):
        torch.save(model.state_dict(), os.path.join(folder, "model.pt"))
        torch.save({"optimizer": optimizer.state_dict(), **state}, os.path.join(folder, "trainer.pt"))
        with open(os.path.join(folder, "args.json"), "w") as f:
            json.dump(asdict(args), f, indent=2)

    commit_checkpoint(run_dir, write, progress)


def save_on_stop(run_dir: str, args, model: nn.Module, optimizer, state: dict | None, progress: tqdm, writer, episodes_file):
    """A stop (Ctrl-C, SIGTERM): the checkpoint (state None: just written), the logs out, and the command that continues."""
    if state is not None:
        episodes_file.flush()
        save_checkpoint(run_dir, args, model, optimizer, state, progress)
    progress.close()
    writer.close()
    episodes_file.close()
    print(f"saved {run_dir}/checkpoint; continue with: python {sys.argv[0]} --resume {run_dir}")


class StopRequest:
    """First Ctrl-C, or SIGTERM (SLURM pre-emption, `timeout`): save a checkpoint and exit (see the module docstring for
    when). A second Ctrl-C stops at once; a second SIGTERM changes nothing. release() puts the default handlers back."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested = True
            name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
            tqdm.write(f"{name}: saving a checkpoint (Ctrl-C again to quit without saving)")

    def release(self):  # for the evaluation: a stop just ends the process, and --resume runs the evaluation again
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def open_episodes(run_dir: str, resumed_at: int) -> io.TextIOWrapper:
    """episodes.csv for appending; a resumed run first drops the rows after its checkpoint's frame `resumed_at`."""
    path = os.path.join(run_dir, "episodes.csv")
    rows = []
    if resumed_at and os.path.exists(path):
        with open(path, newline="") as f:
            # (a hard kill can leave a last row cut short, even inside its frame count)
            rows = [row for row in list(csv.reader(f))[1:] if len(row) == 4 and all(row) and int(row[0]) <= resumed_at]
    f = open(path, "w", newline="")
    csv.writer(f).writerows([["frames", "return", "length", "success"], *rows])
    return f


@torch.no_grad()
def evaluate_policy(args, envs, policy) -> dict:
    """The policy on --eval-episodes levels (seeds EVAL_SEED + k), batched over the envs of `envs`, its actions sampled
    on the CPU from a generator seeded with --seed; policy(dones) gives the action probabilities [envs, actions] for the
    envs' current observations (dones: the envs whose episode just began). Once every level is handed out, an env plays
    on, uncounted, so that the batch keeps its size."""
    generator, dones = torch.Generator().manual_seed(args.seed), np.ones(len(envs), bool)
    playing = list(range(len(envs)))  # the level each env plays; None once all are handed out (its episodes uncounted)
    for index, level in enumerate(playing):
        envs.start_episode(index, EVAL_SEED + level)
    next_level, episodes = len(envs), {}
    with tqdm(total=args.eval_episodes, unit="episode", desc="evaluation", dynamic_ncols=True) as progress:
        while len(episodes) < args.eval_episodes:
            action = torch.multinomial(policy(dones).cpu(), 1, generator=generator)[:, 0]
            dones, finished = envs.step(action.tolist())[-2:]
            for index, episode in zip(np.flatnonzero(dones), finished):  # a finished env has started an unseeded episode
                if playing[index] is not None:
                    episodes[playing[index]] = episode
                    progress.update(1)
                playing[index] = next_level if next_level < args.eval_episodes else None
                if playing[index] is not None:
                    envs.start_episode(index, EVAL_SEED + next_level)
                    next_level += 1
    episodes = [episodes[k] for k in range(args.eval_episodes)]
    successes = sum(bool(episode["success"]) for episode in episodes)
    low, high = success_interval(successes, len(episodes))
    return dict(episodes=len(episodes), success_rate=successes / len(episodes), ci99_low=low, ci99_high=high,
                mean_return=float(np.mean([episode["return"] for episode in episodes])),
                mean_length=float(np.mean([episode["length"] for episode in episodes])))


def success_windows(run_dir: str, window_frames: int, frames: int) -> list[dict]:
    """The training success rate per window of window_frames frames, from episodes.csv (null where none ended)."""
    with open(os.path.join(run_dir, "episodes.csv")) as f:
        rows = [(int(row["frames"]), int(row["success"])) for row in csv.DictReader(f)]
    windows = []
    for end in range(window_frames, frames + window_frames, window_frames):
        inside = [success for at, success in rows if end - window_frames < at <= end]
        rate = np.mean(inside).item() if inside else None
        windows.append({"frames": min(end, frames), "episodes": len(inside), "success_rate": rate})
    return windows


def write_results(args, run_dir: str, frames: int, fps: float, evaluation: dict):
    """results.json: the evaluation (evaluate_policy's fields), the training frames per second (checkpoint writes left
    out), the command, and the training success rate per --window-frames frames."""
    command = shlex.join(["python", *sys.argv])
    results = {"env_id": args.env_id, "frames": frames, **evaluation, "fps": fps, "command": command, "seed": args.seed,
               "windows": success_windows(run_dir, args.window_frames, frames)}
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"done: {frames} frames at {fps:.0f} frames/s; final policy on {results['episodes']} levels: success "
          f"{results['success_rate']:.3f} [{results['ci99_low']:.3f}, {results['ci99_high']:.3f}] (99%), return "
          f"{results['mean_return']:.2f}; {run_dir}/results.json")


# -----------------------------------------------------------------------------------------------------------------
# Copied verbatim from glam_ppo.py (and zero_shot_eval.py's success_interval): errors, checkpoints, intervals
# -----------------------------------------------------------------------------------------------------------------

class UsageError(Exception):
    """A problem the user can fix (a bad flag, a full disk); it is printed alone, in one line, without a traceback."""


def one_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def check_ranges(args, ranges: dict[str, str]):
    """A UsageError for the first flag outside its range; a range is an interval such as "(0, 1]" or "[1, inf)"."""
    for name, interval in ranges.items():
        value = getattr(args, name)
        if value is None or value == "auto":
            continue
        low, high = (float(bound) for bound in interval[1:-1].split(","))
        above = low < value if interval[0] == "(" else low <= value
        below = value < high if interval[-1] == ")" else value <= high
        if not (math.isfinite(value) and above and below):
            allowed = f"{'more than' if interval[0] == '(' else 'at least'} {low:g}" if high == math.inf else f"in {interval}"
            raise UsageError(f"--{name.replace('_', '-')} {value} must be {'' if math.isfinite(value) else 'a finite number '}{allowed}")


def make_folder(folder: str, what: str) -> str:
    """The folder, made now (before any model is loaded), or one line saying why it cannot be."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot make {what} {folder}: {error.strerror or error}") from None
    return folder


def checkpoint_folders(run_dir: str, required: bool = True) -> list[str]:
    """A run's checkpoint/ and checkpoint.previous/, newest first, those there are (a save killed between its two renames
    leaves no checkpoint/)."""
    folders = [path for path in (os.path.join(run_dir, name) for name in ("checkpoint", "checkpoint.previous")) if os.path.isdir(path)]
    if not folders and required:
        raise UsageError(f"no checkpoint in {run_dir!r} (expected {run_dir}/checkpoint/ or {run_dir}/checkpoint.previous/)")
    return folders


def saved_args(run_dir: str) -> dict:
    """The args.json of the run's newest checkpoint that has a readable one."""
    for folder in checkpoint_folders(run_dir):
        with contextlib.suppress(OSError, ValueError), open(os.path.join(folder, "args.json")) as f:
            return json.load(f)
    raise UsageError(f"cannot resume {run_dir}: no checkpoint there has a readable args.json")


def commit_checkpoint(run_dir: str, write, progress: tqdm | None = None):
    """`write(folder)` into checkpoint.tmp, renamed to checkpoint/ once written; the one it replaces is kept as
    checkpoint.previous/. A write that fails (a full disk) removes checkpoint.tmp and stops the run with one line naming
    the last good checkpoint (the progress bar closed first, so that the line is the last on the screen)."""
    final, temporary, previous = (os.path.join(run_dir, name) for name in ("checkpoint", "checkpoint.tmp", "checkpoint.previous"))
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        os.makedirs(temporary)
        write(temporary)
    except Exception as error:  # a full disk: OSError, or torch.save's RuntimeError, or safetensors' own error
        shutil.rmtree(temporary, ignore_errors=True)
        if progress is not None:
            progress.close()
        raise UsageError(f"could not write a checkpoint in {run_dir} ({getattr(error, 'strerror', None) or one_line(error)}); {last_good(run_dir)}") from None
    if os.path.exists(final):
        shutil.rmtree(previous, ignore_errors=True)
        os.rename(final, previous)
    os.rename(temporary, final)


def last_good(run_dir: str) -> str:
    folders = checkpoint_folders(run_dir, required=False)
    return f"the last good checkpoint is {folders[0]}" if folders else "no checkpoint was written"


def success_interval(successes: int, episodes: int, z: float = 2.576) -> tuple[float, float]:
    """The 99% Wilson score interval of a success rate: inside [0, 1], and never of zero width (0/50 gives [0, 0.117]).
    Differs from the original: the paper's interval is the normal one, mean +- 2.576 std / sqrt(n), of zero width there."""
    rate, spread = successes / episodes, z * z / episodes
    centre = (rate + spread / 2) / (1 + spread)
    half_width = z / (1 + spread) * math.sqrt(rate * (1 - rate) / episodes + spread / (4 * episodes))
    # At 0 and at n successes a bound is exactly 0 or 1, which rounding would miss by an ulp.
    return (0.0 if successes == 0 else centre - half_width), (1.0 if successes == episodes else centre + half_width)


# -----------------------------------------------------------------------------------------------------------------
# BabyAI-Text, copied verbatim from glam_ppo.py: the sentences, the actions, the envs, the prompt, the levels
# -----------------------------------------------------------------------------------------------------------------

AGENT_CELL = (3, 6)  # the agent's cell in the 7x7 egocentric view; it faces towards j = 0
DOOR_STATES = ("open", "closed", "locked")


def _steps(count: int, direction: str) -> str:
    return f"{count} step{'s' if count > 1 else ''} {direction}"


def _object_phrase(type_idx: int, colour_idx: int, state: int) -> str:
    kind, colour = IDX_TO_OBJECT[type_idx], IDX_TO_COLOR[colour_idx]
    return f"{DOOR_STATES[state]} {colour} door" if kind == "door" else f"{colour} {kind}"


def describe(image: np.ndarray) -> list[str]:
    """The BabyAI-Text sentences for a 7x7x3 egocentric observation image (reference section 1)."""
    sentences = []
    if image[AGENT_CELL][0] > 2:  # a carried object is drawn in the agent's own cell (types 0-2: unseen, empty, wall)
        sentences.append(f"You carry a {_object_phrase(*image[AGENT_CELL])}")
    agent_i, agent_j = AGENT_CELL
    rays = {
        "forward": [(agent_i, j) for j in range(agent_j - 1, -1, -1)],
        "left": [(i, agent_j) for i in range(agent_i - 1, -1, -1)],
        "right": [(i, agent_j) for i in range(agent_i + 1, 7)],
    }
    for side, cells in rays.items():  # a wall is said when it is the first thing on one of the three straight rays
        for distance, cell in enumerate(cells, start=1):
            if image[cell][0] in (0, 1):
                continue
            if IDX_TO_OBJECT[image[cell][0]] == "wall":
                sentences.append(f"You see a wall {_steps(distance, side)}")
            break
    for i in range(7):
        for j in range(7):
            type_idx, colour_idx, state = image[i, j]
            if type_idx <= 2 or (i, j) == AGENT_CELL:
                continue
            dx, dy = i - agent_i, agent_j - j
            sideways = _steps(abs(dx), "right" if dx > 0 else "left")
            if dx == 0:
                position = _steps(dy, "forward")
            else:
                position = sideways if dy == 0 else f"{sideways} and {_steps(dy, 'forward')}"
            # The original writes "a" before every object, "a open red door" included; trained models saw it.
            sentences.append(f"You see a {_object_phrase(type_idx, colour_idx, state)} {position}")
    return sentences


ACTIONS = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle")
USELESS_ACTIONS = ("sleep", "do nothing", "think")
NO_OP = 6  # minigrid's `done`, which does nothing in BabyAI levels


def action_names(action_space: str) -> list[str]:
    """Action strings; index i is minigrid action i, and indices past 5 map to the no-op."""
    spaces = {"canonical": ACTIONS, "restricted": ACTIONS[:3], "augmented": ACTIONS + USELESS_ACTIONS}
    if action_space not in spaces:
        raise UsageError(f"unknown action space {action_space!r}; choose canonical, restricted or augmented")
    return list(spaces[action_space])


class BabyAIText(gym.Wrapper):
    """Observations become {"mission", "sentences"}; reward is `reward_scale` x the env reward; info has success."""

    def __init__(self, env: gym.Env, reward_scale: float = 20.0):
        super().__init__(env)
        self.reward_scale = reward_scale

    def text(self, obs) -> dict:
        return {"mission": obs["mission"], "sentences": describe(obs["image"])}

    def reset(self, **kwargs):
        # minigrid prints every rejected level sample ("Sampling rejected: unreachable object"); keep it quiet.
        with contextlib.redirect_stdout(io.StringIO()):
            obs, info = self.env.reset(**kwargs)
        return self.text(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(min(int(action), NO_OP))
        info["success"] = reward > 0
        return self.text(obs), self.reward_scale * reward, terminated, truncated, info


def make_env(env_id: str, reward_scale: float = 20.0, **env_kwargs) -> BabyAIText:
    if env_id not in gym.registry or not env_id.startswith("BabyAI-"):
        raise UsageError(f"unknown env id {env_id!r}; valid ids: {', '.join(babyai_env_ids())}")
    return BabyAIText(gym.make(env_id, **env_kwargs).unwrapped, reward_scale)


class TextVecEnv:
    """Parallel BabyAI-Text envs that reset themselves and keep each episode's prompt history: the last
    `num_observations` observations (the paper's 3) and the actions between them, cleared at each episode start
    (reference section 4). With final_frames, a finished episode comes with its last image of the level (for videos)."""

    def __init__(self, env_id: str, num_envs: int, action_space: str, reward_scale: float = 20.0, actions=None,
                 final_frames: bool = False, num_observations: int = 3):
        self.envs = [make_env(env_id, reward_scale) for _ in range(num_envs)]
        self.actions = list(actions) if actions is not None else action_names(action_space)  # the strings the prompt offers
        self.final_frames, self.missions = final_frames, [""] * num_envs
        self.obs_histories = [deque(maxlen=num_observations) for _ in range(num_envs)]
        self.action_histories = [deque(maxlen=num_observations - 1) for _ in range(num_envs)]
        self.episode_returns, self.episode_lengths = np.zeros(num_envs), np.zeros(num_envs, dtype=int)

    def __len__(self):
        return len(self.envs)

    def start_episode(self, index: int, seed: int | None = None):
        obs, _ = self.envs[index].reset(seed=seed)
        self.missions[index] = obs["mission"]
        self.obs_histories[index].clear()
        self.action_histories[index].clear()
        self.obs_histories[index].append(obs["sentences"])
        self.episode_returns[index], self.episode_lengths[index] = 0.0, 0

    def reset(self, seed: int | None = None) -> list[str]:
        for index in range(len(self)):
            self.start_episode(index, None if seed is None else seed + index)
        return self.prompts()

    def frame(self, index: int) -> np.ndarray:
        """The level as minigrid draws it, the agent's view highlighted: [H, W, 3] uint8."""
        return self.envs[index].unwrapped.get_frame(highlight=True, tile_size=32)

    def prompts(self) -> list[str]:
        return [
            build_prompt(goal, self.actions, observations, past_actions)
            for goal, observations, past_actions in zip(self.missions, self.obs_histories, self.action_histories)
        ]

    def step(self, actions) -> tuple[list[str], np.ndarray, np.ndarray, list[dict]]:
        """Returns (next prompts, rewards, dones, finished episodes as {"return", "length", "success"})."""
        rewards, dones, finished = np.zeros(len(self), dtype=np.float32), np.zeros(len(self), dtype=bool), []
        for index, (env, action) in enumerate(zip(self.envs, actions)):
            obs, reward, terminated, truncated, info = env.step(int(action))
            rewards[index] = reward
            self.episode_returns[index] += reward
            self.episode_lengths[index] += 1
            if terminated or truncated:
                dones[index] = True
                finished.append({"return": self.episode_returns[index], "length": int(self.episode_lengths[index]), "success": info["success"]})
                if self.final_frames:
                    finished[-1]["frame"] = self.frame(index)
                self.start_episode(index)
            else:
                self.obs_histories[index].append(obs["sentences"])
                self.action_histories[index].append(self.actions[int(action)])
        return self.prompts(), rewards, dones, finished


def build_prompt(goal: str, actions, obs_history, action_history) -> str:
    """The GLAM prompt, byte-exact (reference section 4); it ends with `Action k: ` for the next action."""
    prompt = "Possible action of the agent:" + "".join(f" {action}," for action in actions)[:-1] + f" \n Goal of the agent: {goal}"
    for i, sentences in enumerate(obs_history):
        prompt += f" \n Observation {i}: " + "".join(f"{sentence}, " for sentence in sentences) + f"\n Action {i}: "
        if i < len(action_history):
            prompt += action_history[i]
    return prompt


TASK_KINDS = ("goto", "pickup", "open", "putnext", "pick_up_seq_go_to")
HELD_OUT_PAIRS = ("yellow box", "red key", "red door", "green ball", "grey door")


class LocalTaskLevel(RoomGridLevel):
    """One 8x8 room (two for `open`) with one BabyAI-Text task per episode.

    Differs from the original: a Mixed level draws its task kind at every reset from that reset's RNG, so every
    kind appears in proportion and episodes are reproducible; the original drew it once per env, at construction.
    """

    def __init__(self, task_kinds=TASK_KINDS, task_kind: str | None = None, pairs: Literal["train", "test", "any"] = "train",
                 sequence_forms=("then", "after"), second_task: str = "goto", num_dists: int = 8, room_size: int = 8, **kwargs):
        if task_kind is not None and task_kind not in task_kinds:
            raise ValueError(f"task_kind {task_kind!r} is not one of {task_kinds}")
        self.task_kinds = (task_kind,) if task_kind else tuple(task_kinds)
        self.pairs, self.sequence_forms, self.second_task, self.num_dists = pairs, sequence_forms, second_task, num_dists
        self.task_kind = self.task_kinds[0]
        super().__init__(room_size=room_size, num_rows=1, num_cols=2 if "open" in self.task_kinds else 1, **kwargs)

    def _gen_grid(self, width, height):
        # The kind decides the grid's width, so draw it first, from this reset's seed.
        self.task_kind = self._rand_elem(self.task_kinds)
        self.num_cols = 2 if self.task_kind == "open" else 1
        self.width = (self.room_size - 1) * self.num_cols + 1
        super()._gen_grid(self.width, height)

    def _allowed(self, pair: str) -> bool:
        return self.pairs == "any" or (pair in HELD_OUT_PAIRS) == (self.pairs == "test")

    def _pick_targets(self, objs, count):
        """Distinct-looking objects whose adjective-noun pairs this level's split allows."""
        candidates = [obj for obj in objs if self._allowed(f"{obj.color} {obj.type}")]
        self.np_random.shuffle(candidates)
        chosen, seen = [], set()
        for obj in candidates:
            if (obj.color, obj.type) not in seen:
                chosen.append(obj)
                seen.add((obj.color, obj.type))
        if len(chosen) < count:
            raise RejectSampling("not enough objects with allowed adjective-noun pairs")
        return [ObjDesc(obj.type, obj.color) for obj in chosen[:count]]

    def gen_mission(self):
        if self.task_kind == "open":
            return self._gen_open_mission()
        self.place_agent()
        objs = self.add_distractors(num_distractors=self.num_dists + (1 if self.task_kind in ("goto", "pickup") else 2), all_unique=False)
        self.check_objs_reachable()
        if self.task_kind in ("goto", "pickup"):
            (target,) = self._pick_targets(objs, 1)
            self.instrs = GoToInstr(target) if self.task_kind == "goto" else PickupInstr(target)
        elif self.task_kind == "putnext":
            self.instrs = PutNextInstr(*self._pick_targets(objs, 2))
        else:
            first, second = self._pick_targets(objs, 2)
            pick_up_first, then_second = PickupInstr(first), (GoToInstr if self.second_task == "goto" else PickupInstr)(second)
            if self._rand_elem(self.sequence_forms) == "then":
                self.instrs = BeforeInstr(pick_up_first, then_second)
            else:
                self.instrs = AfterInstr(then_second, pick_up_first)

    def _gen_open_mission(self):
        colour = self._rand_elem([c for c in ("yellow", "green", "blue", "purple", "red", "grey") if self._allowed(f"{c} door")])
        agent_room = self._rand_int(0, 2)
        self.add_door(0, 0, door_idx=0, color=colour, locked=True)
        self.add_object(agent_room, 0, "key", colour)
        self.add_distractors(agent_room, 0, num_distractors=self.num_dists, all_unique=False)
        self.place_agent(agent_room, 0)
        self.check_objs_reachable()
        named = self.pairs == "test" or self._rand_bool()
        self.instrs = OpenInstr(ObjDesc("door", colour if named else None))


# Registered as a class plus keyword arguments (no closures), so that envs pickle into checkpoints.
BABYAI_TEXT_LEVELS = {
    "BabyAI-MixedTrainLocal-v0": (LocalTaskLevel, dict(pairs="train")),
    "BabyAI-MixedTestLocal-v0": (LocalTaskLevel, dict(pairs="test")),
    "BabyAI-PickupLocal-v0": (LocalTaskLevel, dict(task_kinds=("pickup",), pairs="any")),
    "BabyAI-PickUpSeqGoToLocal-v0": (LocalTaskLevel, dict(task_kinds=("pick_up_seq_go_to",))),
    "BabyAI-PickUpThenGoToLocal-v0": (LocalTaskLevel, dict(task_kinds=("pick_up_seq_go_to",), sequence_forms=("then",))),
    "BabyAI-GoToAfterPickUpLocal-v0": (LocalTaskLevel, dict(task_kinds=("pick_up_seq_go_to",), sequence_forms=("after",))),
    "BabyAI-PickUpSeqPickUpLocal-v0": (LocalTaskLevel, dict(task_kinds=("pick_up_seq_go_to",), second_task="pickup")),
    "BabyAI-GoToLocalS8N16-v0": (GoToLocal, dict(room_size=8, num_dists=16)),
}
for _env_id, (_entry_point, _kwargs) in BABYAI_TEXT_LEVELS.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=_entry_point, kwargs=_kwargs)


def babyai_env_ids() -> list[str]:
    return sorted(env_id for env_id in gym.registry if env_id.startswith("BabyAI-"))


# Every word and punctuation mark of BabyAI-Text's prompts, missions and actions (the French probe's too).
VOCABULARY_TEXT = """Possible action of the agent: Goal of the agent Observation Action, You see a wall steps step forward left right
and carry open closed locked door key ball box goal lava agent floor empty unseen object red green blue purple yellow grey
turn left, turn right, go forward, pick up, drop, toggle, sleep, do nothing, think, rotate left, rotate right, move ahead,
take, release, switch, go to the a put next then after you in front of behind on your I would like the agent to You have
Actions possibles pour l'agent: But de l'agent tourner à gauche, droite, aller tout droit, attraper, lâcher, basculer, Tu
vois un une mur pas devant et portes ouverte fermée clef porte balle boîte rouge verte bleue violette jaune grise la
0 1 2 3 4 5 6 7 8 9"""


def keep_freed_memory():
    """On glibc, keep freed buffers under 2 GB for reuse (and up to 512 MB free at the top of the heap) rather than hand
    them back to the kernel and fault them in again at the next allocation, where a CPU run spent up to 45% of its time
    (benchmark/README.md, malloc settings). CPU runs only; GLIBC_TUNABLES or a MALLOC_ variable set by the user stands."""
    if torch.cuda.is_available() or any(name == "GLIBC_TUNABLES" or name.startswith("MALLOC_") for name in os.environ):
        return  # on a GPU the big tensors live there, and the freed CPU copies of the weights would stay in the heap
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl, Windows): their allocators keep freed memory already or differ
        return
    mmap_threshold, trim_threshold = -3, -1  # mallopt's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD
    libc.mallopt(mmap_threshold, 2_000_000_000)
    libc.mallopt(trim_threshold, 512 << 20)


if __name__ == "__main__":
    keep_freed_memory()
    try:
        main(parse_args())
    except UsageError as error:
        sys.exit(f"drrn.py: error: {error}")
