"""Symbolic PPO: the paper's baseline that reads BabyAI's symbolic view instead of text (Carta et al., ICML 2023), in one
file, CleanRL-style.

The agent is BabyAI's actor-critic `expert_filmcnn` (the authors ran `experiments/train_symbolic_ppo.py --arch
expert_filmcnn`, with the `babyai` package's model.py under babyai-text/): a GRU (128) encodes the mission's words; a CNN
over the 7x7x3 egocentric symbolic view (object, colour, state indices) is modulated by two FiLM layers conditioned on
that encoding; an LSTM memory (128) follows; actor and critic MLPs of 64 tanh units read its output; 6 actions. It is
trained by PPO as BabyAI runs it: 64 envs x 40 frames per update, backpropagation through time over sequences of
--recurrence 20 frames, the LSTM memory carried along the sequence and zeroed at every episode start.

    python baselines/symbolic_ppo.py                                  # MixedTrainLocal, 1.5M frames (CPU)
    python baselines/symbolic_ppo.py --resume runs/<run> --total-timesteps 3000000

Writes runs/<env>__<exp>__<seed>__<time>/: TensorBoard logs, episodes.csv (one row per finished training episode),
checkpoint/ (every --save-interval updates and at the end) and results.json (the final policy on --eval-episodes
levels of seeds 10**9 + k, with a 99% Wilson interval, and the training success rate per --window-frames frames). The
authors' launcher runs --frames 400000; the default 1.5M is what the paper plots.

Differs from the original (knowingly):
- Vocabulary: a fixed one, the words ([a-z]+) of glam_ppo.py's VOCABULARY_TEXT (every word of BabyAI-Text's missions,
  and its prompts' and French words), ids from 2 in sorted order, 0 padding, 1 for any other word; BabyAI's
  InstructionsPreprocessor grows one on the fly (ids in order of first appearance, at most 100 words, an embedding of
  100 rows). Ours has len(VOCAB) + 2 rows.
- Batch normalisation: the original's model stays in train mode throughout (`acmodel.train()`), so every forward call,
  rollout steps included, normalises by the statistics of its own batch (the 64 envs of a step). Ours computes those
  statistics per step, over the batch of that step (`StepBatchNorm`), so that one call over --recurrence steps equals
  BabyAI's loop of one call per step; in the update the statistics at offset i come from the minibatch's sequences
  (mixing rollout steps), so, as in BabyAI, the first epoch's ratios are not exactly 1. It keeps no running statistics,
  which the original updates but never uses in training. The final evaluation normalises over its batch of envs the same
  way (envs go on playing uncounted episodes once all --eval-episodes are given out, so that the batch keeps its size).
- Minibatches: --num-minibatches (CleanRL's name; 2: 2,560 frames per rollout / 1,280 frames per minibatch, BabyAI's
  --batch-size 1280) must cut the rollout into whole sequences of --recurrence; the original lets the last minibatch of
  an epoch be smaller. Its write-back of recomputed memories within a sequence (`exps.memory[inds + i + 1] = memory`) is
  dropped: sequences start at multiples of --recurrence, so it is never read.
- Levels: a Mixed level draws its task kind at every reset (the authors' envs drew it once per env, before seeding).
- Seeds: env i's first level is seed + i (the original: 100 x seed + i), so --seed is at most 10**8, below the
  evaluation levels. Ctrl-C/SIGTERM during a rollout saves the run as it stood before that rollout; during an update,
  after that update (a second Ctrl-C quits without saving); during the evaluation it just ends the process, and --resume
  of a run that has all its frames but no results.json runs the evaluation.
- Logging follows CleanRL: losses/value_loss is BabyAI's value loss (the clipped squared error, with no 1/2; the loss
  weighs it by --vf-coef), charts/success_rate is each training episode's success (0 or 1), as glam_ppo.py logs it.
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
from minigrid.envs.babyai.core.roomgrid_level import RejectSampling, RoomGridLevel
from minigrid.envs.babyai.core.verifier import (AfterInstr, BeforeInstr, GoToInstr, ObjDesc, OpenInstr, PickupInstr,
                                                PutNextInstr)
from minigrid.envs.babyai.goto import GoToLocal
from torch.distributions.categorical import Categorical
from tqdm import tqdm


@dataclass
class Args:
    env_id: str = "BabyAI-MixedTrainLocal-v0"
    """the id of the BabyAI level"""
    num_envs: int = 64
    """the number of parallel environments (BabyAI's --procs)"""
    num_steps: int = 40
    """the number of steps to run in each environment per policy rollout (BabyAI's --frames-per-proc)"""
    total_timesteps: int = 1_500_000
    """total frames of the experiment"""
    seed: int = 1
    """seed of the experiment"""
    learning_rate: float = 1e-4
    """the learning rate of Adam (constant)"""
    adam_eps: float = 1e-5
    """the epsilon of Adam"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.99
    """the lambda for the general advantage estimation"""
    recurrence: int = 20
    """frames per sequence through which gradients flow back in the memory (must divide --num-steps)"""
    update_epochs: int = 4
    """the K epochs to update the policy"""
    num_minibatches: int = 2
    """the number of mini-batches (2: 2,560 frames per rollout / 1,280 frames per minibatch, BabyAI's --batch-size
    1280); each must be whole sequences of --recurrence frames"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient (policy and value)"""
    ent_coef: float = 0.01
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    reward_scale: float = 20.0
    """training reward = this x the env reward (the logged episodic returns are these)"""
    save_interval: int = 50
    """write a checkpoint every this many updates (and always at the end)"""
    resume: str | None = None
    """continue the run saved in this folder (runs/<run>); only --total-timesteps, --save-interval, --eval-episodes and
    --window-frames may change"""
    eval_episodes: int = 1000
    """evaluation episodes of the final policy (levels of seeds 10**9 + k), in results.json"""
    window_frames: int = 50_000
    """frames per window of the training success rate in results.json"""
    cuda: bool = True
    """if toggled, cuda will be enabled when available"""
    exp_name: str = "symbolic_ppo"
    """the name of this experiment"""

    # to be filled in runtime: frames per rollout (the batch), per minibatch, and the number of updates
    batch_size: tyro.conf.Suppress[int] = 0
    minibatch_size: tyro.conf.Suppress[int] = 0
    num_iterations: tyro.conf.Suppress[int] = 0


class UsageError(Exception):
    """A problem the user can fix (a bad flag, a full disk); it is printed alone, in one line, without a traceback."""


# -----------------------------------------------------------------------------------------------------------------
# The environment: BabyAI's symbolic view and mission, the 6 actions, in a vector of envs
# -----------------------------------------------------------------------------------------------------------------

VOCABULARY_TEXT = """Possible action of the agent: Goal of the agent Observation Action, You see a wall steps step forward left right
and carry open closed locked door key ball box goal lava agent floor empty unseen object red green blue purple yellow grey
turn left, turn right, go forward, pick up, drop, toggle, sleep, do nothing, think, rotate left, rotate right, move ahead,
take, release, switch, go to the a put next then after you in front of behind on your I would like the agent to You have
Actions possibles pour l'agent: But de l'agent tourner à gauche, droite, aller tout droit, attraper, lâcher, basculer, Tu
vois un une mur pas devant et portes ouverte fermée clef porte balle boîte rouge verte bleue violette jaune grise la
0 1 2 3 4 5 6 7 8 9"""
# The words of every BabyAI-Text mission (and of its prompts, and the French probe's): id 0 pads, 1 is any other word.
VOCAB = {word: index for index, word in enumerate(sorted(set(re.findall("[a-z]+", VOCABULARY_TEXT.lower()))), start=2)}
MAX_WORDS = 64  # instruction tensors are this wide; the model reads up to the longest mission of a batch
NUM_ACTIONS = 6  # left, right, forward, pickup, drop, toggle (minigrid's `done` is left out, as in the paper)


def instruction_ids(mission: str) -> np.ndarray:
    """BabyAI's instruction preprocessing (lower case, the runs of a-z), as ids in the fixed vocabulary, padded with 0."""
    ids = [VOCAB.get(word, 1) for word in re.findall("([a-z]+)", mission.lower())]
    if len(ids) > MAX_WORDS:  # an internal limit (far above BabyAI-Text's longest missions), not a user's error
        raise ValueError(f"a mission has {len(ids)} words, more than MAX_WORDS = {MAX_WORDS}: {mission!r}")
    return np.pad(np.array(ids, dtype=np.int64), (0, MAX_WORDS - len(ids)))


class SymbolicVecEnv:
    """Parallel BabyAI envs that reset themselves: observations as arrays (images [N, 7, 7, 3] uint8, instructions
    [N, MAX_WORDS]); rewards x reward_scale; a finished episode is reported as {"return", "length", "success"}."""

    def __init__(self, env_id: str, num_envs: int, reward_scale: float = 20.0):
        self.envs = [gym.make(env_id).unwrapped for _ in range(num_envs)]
        self.reward_scale = reward_scale
        self.images, self.instrs = np.zeros((num_envs, 7, 7, 3), np.uint8), np.zeros((num_envs, MAX_WORDS), np.int64)
        self.episode_returns, self.episode_lengths = np.zeros(num_envs), np.zeros(num_envs, dtype=int)

    def start_episode(self, index: int, seed: int | None = None):
        # minigrid prints every rejected level sample ("Sampling rejected: unreachable object"); keep it quiet.
        with contextlib.redirect_stdout(io.StringIO()):
            obs, _ = self.envs[index].reset(seed=seed)
        self.images[index], self.instrs[index] = obs["image"], instruction_ids(obs["mission"])
        self.episode_returns[index], self.episode_lengths[index] = 0.0, 0

    def __len__(self):
        return len(self.envs)

    def reset(self, seed: int):
        for index in range(len(self.envs)):
            self.start_episode(index, seed + index)

    def step(self, actions):
        """(rewards, dones, finished episodes, in the order of the envs); a finished env starts its next episode."""
        rewards, dones, finished = np.zeros(len(self.envs), np.float32), np.zeros(len(self.envs), bool), []
        for index, (env, action) in enumerate(zip(self.envs, actions)):
            obs, reward, terminated, truncated, _ = env.step(int(action))
            rewards[index] = self.reward_scale * reward
            self.episode_returns[index] += rewards[index]
            self.episode_lengths[index] += 1
            if terminated or truncated:
                dones[index] = True
                finished.append({"return": float(self.episode_returns[index]), "length": int(self.episode_lengths[index]),
                                 "success": bool(reward > 0)})
                self.start_episode(index)
            else:
                self.images[index] = obs["image"]
        return rewards, dones, finished


# -----------------------------------------------------------------------------------------------------------------
# The agent: BabyAI's ACModel with arch expert_filmcnn, instr_arch gru, memory on
# -----------------------------------------------------------------------------------------------------------------


def init_linear(module: nn.Module):
    """BabyAI's initialisation of linear layers: each output unit's weights drawn N(0, 1) and scaled to norm 1, biases 0
    (convolutions, GRU, LSTM and embedding keep PyTorch's defaults)."""
    if isinstance(module, nn.Linear):
        with torch.no_grad():
            module.weight.normal_(0, 1)
            module.weight /= module.weight.pow(2).sum(1, keepdim=True).sqrt()
            module.bias.zero_()


class StepBatchNorm(nn.Module):
    """BatchNorm2d as BabyAI's model runs it (always in train mode): x [steps x B, C, H, W] is normalised per step,
    over that step's B rows and the H x W positions, then scaled and shifted per channel."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels)), eps

    def forward(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        grouped = x.view(steps, -1, *x.shape[1:])
        var, mean = torch.var_mean(grouped, dim=(1, 3, 4), keepdim=True, correction=0)
        scale = self.weight[:, None, None] * torch.rsqrt(var + self.eps)
        return torch.addcmul(self.bias[:, None, None] - mean * scale, grouped, scale).view_as(x)


class FiLM(nn.Module):
    """BabyAI's ExpertControllerFiLM: conv 3x3, BN, ReLU, conv 3x3, then x * W(instr) + b(instr), BN, ReLU."""

    def __init__(self, instr_dim: int, channels: int = 128):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1), StepBatchNorm(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1), StepBatchNorm(channels)
        self.weight, self.bias = nn.Linear(instr_dim, channels), nn.Linear(instr_dim, channels)

    def forward(self, x, instr, steps: int):
        x = self.conv2(F.relu(self.bn1(self.conv1(x), steps)))
        return F.relu(self.bn2(x * self.weight(instr)[:, :, None, None] + self.bias(instr)[:, :, None, None], steps))


class Agent(nn.Module):
    """Every method takes a batch of sequences: images [T, B, 7, 7, 3], instructions [T, B, W], the memory [B, 2 x 128]
    (the LSTM's h then c) before step 0, and masks [T, B] (0 where an episode starts: the memory is zeroed first).
    Acting is T = 1; the update runs T = --recurrence in one call, the LSTM stepping through it."""

    def __init__(self, vocab_size: int = len(VOCAB) + 2, num_actions: int = NUM_ACTIONS, dim: int = 128):
        super().__init__()
        self.word_embedding, self.instr_rnn = nn.Embedding(vocab_size, dim), nn.GRU(dim, dim, batch_first=True)
        self.conv1, self.bn1 = nn.Conv2d(3, 128, 2, padding=1), StepBatchNorm(128)  # 7x7 -> 8x8, pooled to 4x4
        self.conv2, self.bn2 = nn.Conv2d(128, 128, 3, padding=1), StepBatchNorm(128)  # 4x4, pooled to 2x2
        self.films = nn.ModuleList([FiLM(dim), FiLM(dim)])  # 2x2, pooled to 1x1: a 128-vector
        self.memory_rnn = nn.LSTMCell(128, dim)
        self.actor = nn.Sequential(nn.Linear(dim, 64), nn.Tanh(), nn.Linear(64, num_actions))
        self.critic = nn.Sequential(nn.Linear(dim, 64), nn.Tanh(), nn.Linear(64, 1))
        self.memory_size = 2 * dim
        self.apply(init_linear)

    def encode_instructions(self, instrs: torch.Tensor) -> torch.Tensor:
        """The GRU's output at each mission's last word: [N, 128]."""
        lengths = (instrs != 0).sum(1)
        out, _ = self.instr_rnn(self.word_embedding(instrs[:, : int(lengths.max())]))
        return out[torch.arange(len(instrs)), lengths - 1]

    def forward(self, images, instrs, memory, masks):
        """(logits [T, B, A], values [T, B], the memory after the last step [B, 256])."""
        steps, batch = masks.shape
        x = images.reshape(steps * batch, 7, 7, 3).permute(0, 3, 1, 2).float()  # raw indices, as BabyAI feeds them
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x), steps)), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x), steps)), 2)
        instr = self.encode_instructions(instrs.reshape(steps * batch, -1))
        for film in self.films:
            x = film(x, instr, steps)
        x = F.relu(F.max_pool2d(x, 2)).view(steps, batch, -1)
        h, c = memory.chunk(2, dim=-1)
        hidden = []
        for t in range(steps):
            keep = masks[t].unsqueeze(-1)
            h, c = self.memory_rnn(x[t], (h * keep, c * keep))
            hidden.append(h)
        embedding = torch.stack(hidden)
        return self.actor(embedding), self.critic(embedding).squeeze(-1), torch.cat([h, c], -1)

    def get_value(self, images, instrs, memory, masks):
        return self(images, instrs, memory, masks)[1]

    def get_action_and_value(self, images, instrs, memory, masks, action=None):
        logits, value, memory = self(images, instrs, memory, masks)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), value, memory


# -----------------------------------------------------------------------------------------------------------------
# PPO
# -----------------------------------------------------------------------------------------------------------------

def compute_gae(rewards, values, dones, next_value, next_done, gamma: float, gae_lambda: float):
    """Generalised advantage estimates and returns, as in CleanRL's ppo.py (dones[t] marks obs t as a new episode). A
    time-limit truncation ends the episode like a termination, with no bootstrap, as in CleanRL."""
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            nextnonterminal = 1.0 - next_done
            nextvalues = next_value
        else:
            nextnonterminal = 1.0 - dones[t + 1]
            nextvalues = values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
    return advantages, advantages + values


def main(args: Args):
    stop = StopRequest()  # Ctrl-C or SIGTERM: save a checkpoint (see the module docstring), then exit
    new_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_name = os.path.basename(os.path.normpath(args.resume)) if args.resume else new_name
    run_dir = args.resume or make_folder(os.path.join("runs", run_name), "the run folder")

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    envs = SymbolicVecEnv(args.env_id, args.num_envs, args.reward_scale)
    envs.reset(seed=args.seed)
    agent = Agent().to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=args.adam_eps)
    memory = torch.zeros(args.num_envs, agent.memory_size, device=device)
    next_done = torch.zeros(args.num_envs, device=device)
    global_step, start_iteration, train_time, recent_successes = 0, 1, 0.0, deque(maxlen=100)
    if args.resume:
        trainer = load_run(args, agent, optimizer)
        envs = pickle.loads(trainer["envs"])
        global_step, start_iteration, train_time = trainer["global_step"], trainer["iteration"] + 1, trainer["train_time"]
        memory, next_done = trainer["memory"].to(device), trainer["next_done"].to(device)
        recent_successes.extend(trainer["recent_successes"])
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(run_dir, purge_step=global_step + 1 if args.resume else None)
    if not args.resume:
        table = "\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])
        writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    episodes_file = open_episodes(run_dir, global_step)
    episodes_csv = csv.writer(episodes_file)

    # ALGO Logic: Storage setup, [step, env]
    shape = (args.num_steps, args.num_envs)
    images = torch.zeros(*shape, 7, 7, 3, dtype=torch.uint8, device=device)
    instrs = torch.zeros(*shape, MAX_WORDS, dtype=torch.long, device=device)
    memories = torch.zeros(*shape, agent.memory_size, device=device)
    actions = torch.zeros(shape, dtype=torch.long, device=device)
    logprobs, rewards, dones, values = (torch.zeros(shape, device=device) for _ in range(4))
    # the update's sequences (start step, env): each env's sequences start at multiples of --recurrence, BabyAI's
    sequences = np.array([(start, env) for start in range(0, args.num_steps, args.recurrence) for env in range(args.num_envs)])
    sequences_per_minibatch = args.minibatch_size // args.recurrence
    offsets = torch.arange(args.recurrence, device=device)[:, None]

    def state_after(iterations_done):  # what a checkpoint holds besides the weights and the optimizer
        return snapshot(envs=pickle.dumps(envs), global_step=global_step, iteration=iterations_done, train_time=train_time,
                        memory=memory.cpu(), next_done=next_done.cpu(), recent_successes=list(recent_successes))

    progress = tqdm(total=args.num_iterations * args.batch_size, initial=global_step, unit="frame", dynamic_ncols=True,
                    smoothing=0)
    start_time, start_step = time.time(), global_step
    for iteration in range(start_iteration, args.num_iterations + 1):
        resume_point, iteration_start = state_after(iteration - 1), time.time()  # a stop during the rollout saves this
        for step in range(0, args.num_steps):
            global_step += args.num_envs
            images[step] = torch.as_tensor(envs.images, device=device)
            instrs[step] = torch.as_tensor(envs.instrs, device=device)
            memories[step], dones[step] = memory, next_done

            # ALGO LOGIC: action logic
            with torch.no_grad():
                action, logprob, _, value, memory = agent.get_action_and_value(
                    images[step : step + 1], instrs[step : step + 1], memory, 1 - dones[step : step + 1]
                )
            values[step], actions[step], logprobs[step] = value[0], action[0], logprob[0]

            # TRY NOT TO MODIFY: execute the game and log data.
            reward, done, finished = envs.step(action[0].cpu().numpy())
            rewards[step] = torch.as_tensor(reward, device=device)
            next_done = torch.as_tensor(done, dtype=torch.float32, device=device)
            for episode in finished:
                recent_successes.append(float(episode["success"]))
                episodes_csv.writerow([global_step, episode["return"], episode["length"], int(episode["success"])])
                writer.add_scalar("charts/episodic_return", episode["return"], global_step)
                writer.add_scalar("charts/episodic_length", episode["length"], global_step)
                writer.add_scalar("charts/success_rate", float(episode["success"]), global_step)
            progress.update(args.num_envs)
            if stop.requested:
                return save_on_stop(run_dir, args, agent, optimizer, resume_point, progress, writer, episodes_file)

        # bootstrap value if not done
        with torch.no_grad():
            next_images, next_instrs = (torch.as_tensor(array, device=device)[None] for array in (envs.images, envs.instrs))
            next_value = agent.get_value(next_images, next_instrs, memory, 1 - next_done[None])[0]
        advantages, returns = compute_gae(rewards, values, dones, next_value, next_done, args.gamma, args.gae_lambda)

        # Optimizing the policy and value network on minibatches of sequences, BabyAI's recurrence
        clipfracs = []
        for epoch in range(args.update_epochs):
            order = np.random.permutation(len(sequences))
            for first in range(0, len(sequences), sequences_per_minibatch):
                chosen = torch.as_tensor(sequences[order[first : first + sequences_per_minibatch]], device=device)
                t, e = chosen[:, 0] + offsets, chosen[:, 1].expand(args.recurrence, -1)  # [recurrence, sequences]
                # the mask at a sequence's first step zeroes its stored memory when an episode starts there
                _, newlogprob, entropy, newvalue, _ = agent.get_action_and_value(
                    images[t, e], instrs[t, e], memories[chosen[:, 0], chosen[:, 1]], 1 - dones[t, e], actions[t, e]
                )
                logratio = newlogprob - logprobs[t, e]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())

                # Policy loss (no advantage normalisation, as in BabyAI)
                mb_advantages = advantages[t, e]
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()
                # Value loss, clipped, BabyAI's: no factor 1/2
                v_clipped = values[t, e] + torch.clamp(newvalue - values[t, e], -args.clip_coef, args.clip_coef)
                v_loss = torch.max((newvalue - returns[t, e]) ** 2, (v_clipped - returns[t, e]) ** 2).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
        train_time += time.time() - iteration_start

        # TRY NOT TO MODIFY: record rewards for plotting purposes
        sps = int((global_step - start_step) / (time.time() - start_time))
        scalars = {
            "charts/learning_rate": optimizer.param_groups[0]["lr"], "losses/value_loss": v_loss.item(),
            "losses/policy_loss": pg_loss.item(), "losses/entropy": entropy_loss.item(), "losses/approx_kl": approx_kl.item(),
            "losses/clipfrac": np.mean(clipfracs), "charts/SPS": sps,
        }
        for name, value in scalars.items():
            writer.add_scalar(name, value, global_step)
        success = f"{np.mean(recent_successes):.2f}" if recent_successes else "-"
        progress.set_postfix(update=f"{iteration}/{args.num_iterations}", SPS=sps, success=success)
        if iteration % args.save_interval == 0 or iteration == args.num_iterations or stop.requested:
            episodes_file.flush()
            save_checkpoint(run_dir, args, agent, optimizer, state_after(iteration), progress)
        if stop.requested:
            return save_on_stop(run_dir, args, agent, optimizer, None, progress, writer, episodes_file)
    progress.close()
    writer.close()
    episodes_file.close()
    stop.release()
    eval_envs = SymbolicVecEnv(args.env_id, min(args.num_envs, args.eval_episodes), args.reward_scale)
    eval_memory = torch.zeros(len(eval_envs), agent.memory_size, device=device)

    def policy(dones):  # the action probabilities for the evaluation envs' observations; the memory zeroed at episode starts
        nonlocal eval_memory
        images, instrs = (torch.as_tensor(array, device=device)[None] for array in (eval_envs.images, eval_envs.instrs))
        masks = torch.as_tensor(~dones, dtype=torch.float32, device=device)[None]
        logits, _, eval_memory = agent(images, instrs, eval_memory, masks)
        return logits[0].softmax(-1)

    write_results(args, run_dir, global_step, global_step / train_time, evaluate_policy(args, eval_envs, policy))




def success_interval(successes: int, episodes: int, z: float = 2.576) -> tuple[float, float]:
    """The 99% Wilson score interval of a success rate: inside [0, 1], and never of zero width (0/50 gives [0, 0.117]).
    Differs from the original: the paper's interval is the normal one, mean +- 2.576 std / sqrt(n), of zero width there."""
    rate, spread = successes / episodes, z * z / episodes
    centre = (rate + spread / 2) / (1 + spread)
    half_width = z / (1 + spread) * math.sqrt(rate * (1 - rate) / episodes + spread / (4 * episodes))
    # At 0 and at n successes a bound is exactly 0 or 1, which rounding would miss by an ulp.
    return (0.0 if successes == 0 else centre - half_width), (1.0 if successes == episodes else centre + half_width)




# =================================================================================================================
# APPENDICES: what main() calls besides the method itself
# =================================================================================================================


# -----------------------------------------------------------------------------------------------------------------
# A. The levels of BabyAI-Text that minigrid lacks (copied from glam_ppo.py)
# -----------------------------------------------------------------------------------------------------------------

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


# -----------------------------------------------------------------------------------------------------------------
# B. Flags: parsing and checking
# -----------------------------------------------------------------------------------------------------------------

# The range of every numeric flag, checked right after parsing.
ARG_RANGES = {
    "num_envs": "[1, 100000]", "num_steps": "[1, inf)", "total_timesteps": "[1, inf)", "seed": "[0, 100000000]",
    "learning_rate": "[0, inf)", "adam_eps": "(0, inf)", "gamma": "(0, 1]", "gae_lambda": "[0, 1]", "recurrence": "[1, inf)",
    "update_epochs": "[1, inf)", "num_minibatches": "[1, inf)", "clip_coef": "(0, inf)", "ent_coef": "[0, inf)",
    "vf_coef": "[0, inf)", "max_grad_norm": "(0, inf)", "reward_scale": "(0, inf)", "save_interval": "[1, inf)",
    "eval_episodes": "[1, inf)", "window_frames": "[1, inf)",
}
# Flags that may differ between a run and its resumption; any other difference makes the checkpoint incompatible.
RESUMABLE_CHANGES = {"total_timesteps", "save_interval", "resume", "eval_episodes", "window_frames", "num_iterations"}


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


def finish_args(args: Args) -> Args:
    """Derived fields, and one clear error for every flag out of range and every inconsistent combination of flags."""
    check_ranges(args, ARG_RANGES)
    args.batch_size = args.num_envs * args.num_steps
    args.minibatch_size = args.batch_size // args.num_minibatches
    if args.num_steps % args.recurrence:
        raise UsageError(f"--recurrence {args.recurrence} must divide --num-steps {args.num_steps}: a sequence lies within "
                         "one rollout")
    if args.batch_size % args.num_minibatches or args.minibatch_size % args.recurrence:
        raise UsageError(
            f"--num-minibatches {args.num_minibatches} must cut the rollout of --num-envs x --num-steps = {args.batch_size} "
            f"frames into minibatches of whole sequences of --recurrence {args.recurrence} frames"
        )
    if not args.exp_name or os.sep in args.exp_name or "/" in args.exp_name:
        raise UsageError(f"--exp-name {args.exp_name!r} names a run folder: give a name without '/'")
    if args.total_timesteps < args.batch_size:
        raise UsageError(f"--total-timesteps {args.total_timesteps} is less than one rollout ({args.batch_size} frames)")
    args.num_iterations = args.total_timesteps // args.batch_size
    if args.env_id not in gym.registry or not args.env_id.startswith("BabyAI-"):
        raise UsageError(f"unknown env id {args.env_id!r}; valid ids: {', '.join(babyai_env_ids())}")
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


def one_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# -----------------------------------------------------------------------------------------------------------------
# C. Logs, checkpoints, resume and stopping
# -----------------------------------------------------------------------------------------------------------------


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


def load_run(args: Args, agent: Agent, optimizer) -> dict:
    """The weights, the optimizer and the random streams from --resume's newest checkpoint that loads (one that does
    not is named in one line, and the run goes on from the one before it); its trainer state (counters, envs, memory)."""
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
    agent.load_state_dict(weights)
    optimizer.load_state_dict(trainer["optimizer"])
    restore_rng(trainer["rng"])
    return trainer






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
        sys.exit(f"symbolic_ppo.py: error: {error}")
