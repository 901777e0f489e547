"""GLAM's behavioural-cloning baseline (BC-Bot, BC-GFlan-T5 of Carta et al., ICML 2023), in one file.

The LLM learns, by cross-entropy, to write the demonstrated action after the prompt that glam_ppo.py's policy reads: a
transition's loss is minus the score that GlamAgent gives its action. Demonstrations come from minigrid's BabyAIBot,
or from trajectories saved by `zero_shot_eval.py --save-trajectories`. Held-out action accuracy is the argmax of the
scores that the RL policy samples from, and the env evaluation samples from them, so BC and RL agents are measured the
same way; zero_shot_eval.py evaluates the checkpoint as it is, and `glam_ppo.py --init-from` continues it with PPO.

How to read this file: the method comes first, top to bottom. `Args` (the paper's settings first), glam_ppo.py's
BabyAI-Text, prompt and GlamAgent (copies that tests/test_copies.py keeps identical), the demonstrations, the loss
(`action_nll`), the evaluations, and `main()`: the demonstrations, then the training loop. After the banner
APPENDICES: the levels minigrid lacks, model loading, flags, logs, checkpoints and stopping, pass sizes, and videos.

Seeds: demonstration episode k plays the level `reset(seed=args.seed + k)`, evaluation episode k the level
`reset(seed=args.seed + EVAL_SEED_OFFSET + k)`: the same levels at every evaluation, and never a demonstration's.
"""

import contextlib
import ctypes
import importlib.util
import io
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import textwrap
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from minigrid.core.constants import COLOR_NAMES, IDX_TO_COLOR, IDX_TO_OBJECT
from minigrid.envs.babyai.core.roomgrid_level import RejectSampling, RoomGridLevel
from minigrid.envs.babyai.core.verifier import AfterInstr, BeforeInstr, GoToInstr, ObjDesc, OpenInstr, PickupInstr, PutNextInstr
from minigrid.envs.babyai.goto import GoToLocal
from minigrid.utils.baby_ai_bot import BabyAIBot
from PIL import Image, ImageDraw
from torch.distributions.categorical import Categorical
from tqdm import tqdm
from transformers import BatchEncoding, get_cosine_schedule_with_warmup


@dataclass
class Args:
    # The method: model, scoring, demonstrations and the paper's optimisation (AdamW, lr 5e-4, cosine schedule, 1 epoch)
    model: str = "flan-t5-large"
    """flan-t5-small|base|large|xl|xxl, tiny-t5, tiny-causal, a hub id, a save_pretrained folder or a .gguf file"""
    scoring: Literal["sum", "token-mean", "word-mean", "legacy-paper"] = "sum"
    """how token log-probabilities make an action score, for held-out accuracy and env evaluation (kept in the checkpoint)"""
    prompt_format: Literal["raw", "chat"] = "raw"
    """raw: the action continues the prompt; chat: the prompt as the chat template's user turn, the action as the reply to learn"""
    env_id: str = "BabyAI-MixedTrainLocal-v0"
    """the level of the bot's demonstrations and of the env evaluation"""
    action_space: Literal["canonical", "restricted", "augmented"] = "canonical"
    """the action strings offered in the prompt (the bot needs canonical or augmented)"""
    num_observations: int = 3
    """observations in the prompt, with the actions between them of the bot's demos and the evaluation (the paper's 3; its prompt-length study: 1, 3, 6, 9)"""
    demos: str | None = None
    """a trajectories.jsonl (zero_shot_eval.py --save-trajectories, or a run's demos.jsonl) instead of the bot's demos"""
    num_transitions: int = 400_000
    """transitions of bot demonstrations to generate (the paper's 400k); ignored with --demos"""
    num_envs: int = 32
    """parallel environments for generating demonstrations and for evaluation"""
    holdout_fraction: float = 0.05
    """share of the episodes kept out of training to measure action accuracy"""
    learning_rate: float = 5e-4
    """the peak learning rate of AdamW"""
    weight_decay: float = 0.01
    """AdamW's weight decay (not stated in the paper; PyTorch's default)"""
    warmup_fraction: float = 0.03
    """share of the optimizer steps spent warming the learning rate up from 0 (not stated in the paper)"""
    num_epochs: int = 1
    """passes over the training demonstrations"""
    batch_size: int = 64
    """transitions per optimizer step (not stated in the paper)"""
    max_grad_norm: float = 1.0
    """the maximum norm for the gradient clipping"""
    seed: int = 1
    """seed of the experiment (demonstration levels, data order, initialisation)"""

    # The paper's baselines and variants
    pretrained: bool = True
    """start from the pretrained weights (False: random init from the config)"""
    load_embedding: bool = False
    """with --no-pretrained, copy the pretrained embedding weights"""
    lora_r: int = 0
    """LoRA rank through peft (0: full fine-tuning, as in the paper)"""

    # Hardware, precision and pass sizes
    cuda: bool = True
    """if toggled, cuda will be enabled when available"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    tf32: bool = True
    """on CUDA, run float32 matmuls on TF32 tensor cores (torch.set_float32_matmul_precision("high")); --no-tf32: full fp32"""
    bf16: bool = False
    """run the LLM's forward passes under bfloat16 autocast (weights, optimizer and heads stay float32)"""
    gradient_checkpointing: bool = False
    """recompute each transformer block in the backward pass instead of keeping its activations (far less memory)"""
    score_batch_size: int | Literal["auto"] = "auto"
    """most (prompt, action) pairs in one scoring pass (auto: all at once, halved on CUDA out-of-memory; CPU: a rule)"""
    grad_accum_batch: int | Literal["auto"] = "auto"
    """transitions per forward/backward pass, gradients accumulated over a batch (auto: as --score-batch-size; 0: all)"""

    # Evaluation, logging, checkpoints and videos
    eval_every: int = 50_000
    """training transitions between evaluations and checkpoints (also before the first step and after the last)"""
    eval_episodes: int = 100
    """episodes per env evaluation, sampled from the scored policy"""
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "glam"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""
    resume: str | None = None
    """continue the run saved in this folder (runs/<run>); only logging flags may change"""
    capture_video: bool = False
    """record an episode of an evaluation env every --video-interval optimizer steps, to videos/{run_name} (and W&B)"""
    video_interval: int = 1000
    """optimizer steps between two recorded episodes"""
    video_format: Literal["mp4", "gif"] = "mp4"
    """mp4 (H.264, through imageio-ffmpeg) or gif"""


# The range of every numeric flag, checked right after parsing.
ARG_RANGES = {
    "seed": "[0, 4294967295]", "score_batch_size": "[1, inf)", "lora_r": "[0, inf)", "num_transitions": "[2, inf)", "num_envs": "[1, inf)",
    "num_observations": "[1, inf)", "holdout_fraction": "(0, 1)", "learning_rate": "[0, inf)", "weight_decay": "[0, inf)",
    "warmup_fraction": "[0, 1]", "num_epochs": "[1, inf)", "batch_size": "[1, inf)", "grad_accum_batch": "[0, inf)", "max_grad_norm": "(0, inf)",
    "eval_every": "[1, inf)", "eval_episodes": "[1, inf)", "video_interval": "[1, inf)",
}


class UsageError(Exception):
    """A problem the user can fix (a bad flag, a full disk); it is printed alone, in one line, without a traceback."""


# -----------------------------------------------------------------------------------------------------------------
# BabyAI-Text: the sentences an agent reads, its actions, and a vector of text envs
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


# -----------------------------------------------------------------------------------------------------------------
# The prompt
# -----------------------------------------------------------------------------------------------------------------


def build_prompt(goal: str, actions, obs_history, action_history) -> str:
    """The GLAM prompt, byte-exact (reference section 4); it ends with `Action k: ` for the next action."""
    prompt = "Possible action of the agent:" + "".join(f" {action}," for action in actions)[:-1] + f" \n Goal of the agent: {goal}"
    for i, sentences in enumerate(obs_history):
        prompt += f" \n Observation {i}: " + "".join(f"{sentence}, " for sentence in sentences) + f"\n Action {i}: "
        if i < len(action_history):
            prompt += action_history[i]
    return prompt


# -----------------------------------------------------------------------------------------------------------------
# The agent: an LLM that scores action strings, and a value head
# -----------------------------------------------------------------------------------------------------------------


def glam_head(in_features: int, out_features: int, hidden: int = 1024) -> nn.Sequential:
    """The value and action heads of GLAM: in -> 1024 -> Sigmoid -> 1024 -> Sigmoid -> out."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.Sigmoid(), nn.Linear(hidden, hidden), nn.Sigmoid(), nn.Linear(hidden, out_features)
    )


class GlamAgent(nn.Module):
    """An LLM policy over action strings, and a value head, both reading the same decoder state.

    An action a = (a_1, ..., a_n) is scored by its log-likelihood given the prompt p (reference section 5):

        score(a | p) = sum_j log softmax(LLM(p, a_1 .. a_j-1))[a_j]

    The policy is the softmax over the scores of the admissible actions (`policy_logits`: the sum, or the variants of
    --scoring). The value head reads the decoder's first state (the decoder start token's) or, decoder-only, the
    prompt's last token's; `value_head_input="encoder"` (an ablation) makes it read the mean of the encoder's final
    states. `prompt_format="chat"` (not in the paper) puts the prompt in the tokenizer's chat template and scores the
    action as the assistant's reply (`model_text`). One pass scores every action of many prompts (see below).
    """

    def __init__(
        self, llm, tokenizer, actions, scoring: str = "sum", action_heads: bool = False, score_batch_size: int | str = 1024,
        value_head_input: str = "decoder", prompt_format: str = "raw",
    ):
        super().__init__()
        self.llm, self.tokenizer, self.actions = llm, tokenizer, list(actions)
        self.scoring, self.score_batch_size, self.value_head_input = scoring, score_batch_size, value_head_input
        self.is_encoder_decoder = llm.config.is_encoder_decoder
        self.prompt_format = prompt_format
        self.reply_prefix, self.end_of_turn = "", None  # chat: what the template writes before and after a reply
        if prompt_format == "chat":
            self.reply_prefix, self.end_of_turn = chat_reply_format(tokenizer, self.is_encoder_decoder)
        self.family, self.sliding_window, self.mask_per_layer_type, self.packed = packing_plan(llm)
        if value_head_input == "encoder" and (not self.is_encoder_decoder or action_heads):
            raise UsageError(
                "--value-head-input encoder: a decoder-only model has no encoder, and its value head reads the prompt's "
                "last state, which has seen the whole prompt already; drop the flag" if not self.is_encoder_decoder else
                "--value-head-input encoder ablates the value head of the scoring agent; with --action-heads both heads "
                "read one state: drop one of the two flags"
            )
        text_config = llm.config.get_text_config()
        self.value_head = glam_head(text_config.hidden_size, 1)
        self.action_head = glam_head(text_config.hidden_size, len(self.actions)) if action_heads else None
        self.pairs_per_prompt = 1 if action_heads else len(self.actions)
        self._pack_actions()
        # The CPU rule (PassSize): a scoring pass keeps a layer's activations at a time (100 bytes per token per hidden unit,
        # as update_bytes_per_token counts per layer) and the packed actions' float32 logits, with their copies (12 bytes).
        logit_bytes = 12 * text_config.vocab_size * (1 if action_heads else len(self.packed_ids) + 1)
        self.score_size = PassSize(
            score_batch_size, "--score-batch-size", lambda tokens: 100 * text_config.hidden_size * tokens + logit_bytes, self.pairs_per_prompt
        )
        if self.action_head is None and self.family not in TESTED_FAMILIES:
            check_packed_scoring(self)

    def forward(self, prompts):
        """(policy logits [B, A], values [B]) for a list of prompts."""
        hidden, scores = self._hidden_and_scores(prompts)
        # The heads run in float32 even under --bf16 autocast: bf16's spacing at returns of 16-20 (0.125) is as wide
        # as the value clip of 0.2.
        with torch.autocast(self.device.type, enabled=False):
            hidden = hidden.float()
            logits = self.action_head(hidden) if self.action_head is not None else self.policy_logits(scores)
            return logits, self.value_head(hidden).squeeze(-1)

    def score(self, prompts) -> torch.Tensor:
        """log P(action | prompt) for every prompt and action: [len(prompts), len(actions)] (None with action heads)."""
        return self._hidden_and_scores(prompts)[1]

    def policy_logits(self, scores: torch.Tensor) -> torch.Tensor:
        """The scores as the policy's logits, by --scoring (token-mean divides by the action's tokens, its EOS included)."""
        if self.scoring == "token-mean":
            return scores / self.action_mask.sum(-1)
        if self.scoring == "word-mean":
            return scores / self.action_words
        if self.scoring == "legacy-paper":
            # The paper-era rule: softmax over P / max P (raw probabilities), which caps any action's probability.
            # P / max P as exp(score - max score): the same number, with no 0 / 0 where every P underflows (scores < -104).
            return (scores - scores.max(-1, keepdim=True).values).exp()
        return scores

    def get_value(self, prompts):
        return self(prompts)[1]  # (the scoring pass runs too: one pass gives both)

    def get_action_and_value(self, prompts, action=None):
        logits, value = self(prompts)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), value

    # Scoring every action in one pass. The actions are packed one after the other into a single sequence, each in a
    # block that sees the prompt and its own earlier tokens only (`_packed_attention`), so nothing that grows with the
    # prompt is copied per action. Encoder-decoder models: the encoder reads the prompt once, and each block of the
    # decoder sequence starts with its own decoder start token (T5's position bias depends on distances alone, so a
    # block computes what it would compute alone). Decoder-only models: the blocks follow the prompt, with the
    # positions each action would have right after it, and an action is scored on the tokens that the joint text
    # `prompt + action` is made of (`joint_action_tokens`).

    def _hidden_and_scores(self, prompts):
        """The prompts tokenized once, then scored in passes of at most `score_batch_size` (prompt, action) pairs. An
        update pass (gradients on) comes already split by main (--grad-accum-minibatch), and runs here as one pass."""
        tokens, lengths = self.tokenize_prompts(prompts)

        def in_passes(most):
            passes = [self._score_tokens(self._rows(tokens, lengths, part.start, part.stop)) for part in even_split(len(prompts), most)]
            return torch.cat([hidden for hidden, _ in passes]), None if self.action_head is not None else torch.cat([s for _, s in passes])

        if torch.is_grad_enabled():
            return in_passes(len(prompts))
        return self.score_size.run(in_passes, len(prompts), lambda: max(lengths), self.device)

    def _score_tokens(self, tokens, packed: bool | None = None):
        """(hidden, scores) of tokenized prompts; `packed` (default: where it is exact) or one sequence per pair."""
        if self.action_head is not None:
            return self._final_hidden(tokens), None
        use_packed = self.packed if packed is None else packed
        if use_packed:
            (hidden, logits), source = self._packed_pass(tokens), self.score_source
        else:
            (hidden, logits), source = self._pair_pass(tokens), self.pair_source
        # log_softmax at the scored positions only: logit of the action's token minus the position's logsumexp
        source, targets = source.reshape(-1), self.action_ids.reshape(-1)
        token_logprobs = logits[:, source, targets].float() - logits.float().logsumexp(-1)[:, source]
        scores = (token_logprobs.view(len(tokens.input_ids), *self.action_ids.shape) * self.action_mask).sum(-1)
        return hidden, scores

    def _packed_pass(self, tokens):
        """(the heads' input [B, d], logits [B, positions, vocabulary] where score_source points): one forward pass."""
        num_rows, prompt_length = tokens.input_ids.shape
        num_packed = len(self.packed_ids)
        packed_ids, packed_attention = self.packed_ids.expand(num_rows, -1), self._packed_attention(num_rows)
        with self._decoder_states() as captured:
            if self.is_encoder_decoder:
                encoder_outputs = self.llm.get_encoder()(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
                out = self.llm(
                    encoder_outputs=encoder_outputs, attention_mask=tokens.attention_mask, decoder_input_ids=packed_ids,
                    decoder_attention_mask=self._attention_mask(packed_attention), use_cache=False,
                )
                # Position 0, block 0's decoder start token, sees only itself and the encoder: the paper's decoder state.
                return self._value_input(captured[0][:, 0], encoder_outputs, tokens.attention_mask), out.logits
            prompt_mask = tokens.attention_mask.bool()
            prompt_rows = torch.ones(prompt_length, prompt_length, dtype=torch.bool, device=self.device).tril() & prompt_mask[:, None, :]
            prompt_rows |= torch.eye(prompt_length, dtype=torch.bool, device=self.device)  # a padding row sees itself: no empty row
            prompt_rows = torch.cat([prompt_rows, prompt_rows.new_zeros(num_rows, prompt_length, num_packed)], 2)
            packed_rows = torch.cat([prompt_mask[:, None, :].expand(-1, num_packed, -1), packed_attention], 2)
            positions = (tokens.attention_mask.cumsum(-1) - 1).clamp(min=0)
            positions = torch.cat([positions, tokens.attention_mask.sum(-1, keepdim=True) + self.packed_offsets], 1)
            out = self.llm(
                input_ids=torch.cat([tokens.input_ids, packed_ids], 1),
                attention_mask=self._layer_masks(torch.cat([prompt_rows, packed_rows], 1), positions),
                position_ids=positions, use_cache=False,
                # Logits for the prompt's last token and the packed tokens only, not the whole prompt's vocabulary.
                logits_to_keep=num_packed + 1,
            )
            return captured[0][:, prompt_length - 1], out.logits

    def _packed_attention(self, num_rows: int) -> torch.Tensor:
        """[num_rows, T, T]: a packed token sees its own block's tokens up to itself."""
        same_block = self.packed_blocks[:, None] == self.packed_blocks[None, :]
        causal = self.packed_offsets[:, None] >= self.packed_offsets[None, :]
        return (same_block & causal).expand(num_rows, -1, -1)

    def _pack_actions(self):
        """The action tokens and the packed sequence, as buffers that follow the agent to its device."""
        # Encoder-decoder: the action tokens as the tokenizer gives them (T5 ends them with </s>). Decoder-only: the
        # action continues the prompt, with an </s> after it so that the whole action is scored (chat: the reply
        # ends with the template's end-of-turn text instead, part of `reply_text`).
        if self.is_encoder_decoder:
            token_lists = [self.tokenizer(action).input_ids for action in self.actions]
        elif self.prompt_format == "chat":
            token_lists = joint_action_tokens(self)
        else:
            if self.tokenizer.eos_token_id is None:
                raise UsageError(
                    "this model's tokenizer has no EOS token, which ends a raw action so that the whole action is scored; "
                    + ("use --prompt-format chat, whose template ends the reply" if getattr(self.tokenizer, "chat_template", None) else
                       "use a model whose tokenizer has one")
                )
            token_lists = [ids + [self.tokenizer.eos_token_id] for ids in joint_action_tokens(self)]
        width = max(map(len, token_lists))
        action_ids = torch.full((len(token_lists), width), self.tokenizer.pad_token_id)
        action_mask = torch.zeros(len(token_lists), width, dtype=torch.long)
        for index, ids in enumerate(token_lists):
            action_ids[index, : len(ids)] = torch.tensor(ids)
            action_mask[index, : len(ids)] = 1
        # Block a feeds the tokens that predict action a's tokens. Encoder-decoder: the decoder start token and all but
        # the last token. Decoder-only: all but the last (the prompt's last token predicts the first). score_source[a,
        # j]: the position whose logits give action a's token j (decoder-only: position 0 is the prompt's last token).
        if self.is_encoder_decoder:
            blocks = [[self.llm.config.decoder_start_token_id] + ids[:-1] for ids in token_lists]
        else:
            blocks = [ids[:-1] for ids in token_lists]
        block_starts = np.cumsum([0] + [len(block) for block in blocks])
        score_source = torch.zeros(len(token_lists), width, dtype=torch.long)
        for index, ids in enumerate(token_lists):
            score_source[index, : len(ids)] = torch.arange(len(ids)) + int(block_starts[index])
            if not self.is_encoder_decoder:
                score_source[index, 0] = 0
        buffers = {
            "action_ids": action_ids, "action_mask": action_mask,
            "action_words": torch.tensor([len(a.split()) for a in self.actions], dtype=torch.float),
            "packed_ids": torch.tensor([token for block in blocks for token in block]),
            "packed_blocks": torch.tensor([a for a, block in enumerate(blocks) for _ in block]),
            "packed_offsets": torch.tensor([j for block in blocks for j in range(len(block))]),
            "score_source": score_source,
            # One sequence per (prompt, action) pair instead (`_pair_pass`): action a's token j is read at a x width + j.
            "pair_source": torch.arange(len(token_lists) * width).view(len(token_lists), width),
        }
        for name, tensor in buffers.items():
            self.register_buffer(name, tensor, persistent=False)

    def model_text(self, prompt: str) -> str:
        """The text the model reads. Encoder-decoder: the prompt. Decoder-only: the prompt without its trailing space,
        which belongs to the action's first token (`joint_action_tokens`); chat: the prompt as the user turn of the chat
        template (after its default system turn, if any: what the model was tuned on), then its generation prompt."""
        if self.prompt_format == "chat":  # the trailing space belongs to the action, not to the user's turn
            return render_chat(self.tokenizer, [{"role": "user", "content": prompt.removesuffix(" ")}], add_generation_prompt=True)
        return prompt if self.is_encoder_decoder else prompt.removesuffix(" ")

    def reply_text(self, action: str) -> str:
        """Decoder-only: the text that follows `model_text(prompt)` when the agent takes `action`."""
        return self.reply_prefix + action + self.end_of_turn if self.prompt_format == "chat" else f" {action}"

    def tokenize_texts(self, texts, **kwargs) -> BatchEncoding:
        """Texts the model reads; a chat template writes its special tokens (a BOS) itself: none are added to it."""
        return self.tokenizer(list(texts), add_special_tokens=self.prompt_format == "raw", **kwargs)

    def tokenize_prompts(self, prompts) -> tuple[BatchEncoding, list[int]]:
        """The prompts as the model reads them, and their lengths in tokens; decoder-only ones left-padded."""
        padding_side = "right" if self.is_encoder_decoder else "left"
        tokens = self.tokenize_texts(map(self.model_text, prompts), padding=True, padding_side=padding_side)
        # Counted on the lists, which also works for tensors that hold no values (benchmark/memory.py's fake ones).
        lengths = [sum(mask) for mask in tokens.attention_mask]
        return tokens.convert_to_tensors("pt").to(self.device), lengths

    def prompt_lengths(self, prompts) -> list[int]:
        """Each prompt's length in tokens, as the model reads it."""
        return [len(ids) for ids in self.tokenize_texts(map(self.model_text, prompts)).input_ids]

    def _rows(self, tokens, lengths, start: int, stop: int) -> BatchEncoding:
        """Rows start..stop of tokenized prompts with only the padding they need: what tokenizing them alone gives."""
        width = max(lengths[start:stop])
        columns = slice(None, width) if self.is_encoder_decoder else slice(tokens.input_ids.shape[1] - width, None)
        return BatchEncoding({"input_ids": tokens.input_ids[start:stop, columns], "attention_mask": tokens.attention_mask[start:stop, columns]})

    @property
    def device(self):
        return self.value_head[0].weight.device

    def _attention_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """[B, Q, K] booleans (True: may attend) as the 4D mask that the model's attention implementation takes."""
        if self.llm.config._attn_implementation == "eager":  # eager attention adds the mask to the scores
            return torch.zeros(allowed.shape, device=self.device).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]
        return allowed[:, None]

    def _layer_masks(self, allowed: torch.Tensor, positions: torch.Tensor):
        """The 4D mask, with the model's sliding window (keys fewer than `sliding_window` positions back) if it has one:
        for every layer, or as {layer type: mask} when only some layers slide."""
        if self.sliding_window is None:
            return self._attention_mask(allowed)
        windowed = self._attention_mask(allowed & (positions[:, :, None] - positions[:, None, :] < self.sliding_window))
        if not self.mask_per_layer_type:
            return windowed
        return {"full_attention": self._attention_mask(allowed), "sliding_attention": windowed}

    @contextlib.contextmanager
    def _decoder_states(self):
        """A list that receives the decoder's output states during a pass, for the heads (no other layer's are kept)."""
        captured = []
        hook = self.llm.get_decoder().register_forward_hook(lambda module, args, output: captured.append(output.last_hidden_state))
        try:
            yield captured
        finally:
            hook.remove()

    def _value_input(self, decoder_state: torch.Tensor, encoded, attention_mask: torch.Tensor) -> torch.Tensor:
        """The decoder's first state (the paper), or the mean of the encoder's final states over the prompt's tokens."""
        if self.value_head_input == "decoder":
            return decoder_state
        mask = attention_mask.unsqueeze(-1).to(encoded.last_hidden_state.dtype)
        return (encoded.last_hidden_state * mask).sum(1) / mask.sum(1)

    def _pair_pass(self, tokens):
        """(the heads' input [B, d], logits [B, A x W, vocabulary]): one sequence per (prompt, action) pair. Exact for any
        model that reads padding from a 2D mask: the scorer of ALiBi models, and what packed scoring is checked against."""
        num_rows, num_actions = len(tokens.input_ids), len(self.actions)
        width = self.action_ids.shape[1]
        prompt_ids, prompt_mask = (t.repeat_interleave(num_actions, 0) for t in (tokens.input_ids, tokens.attention_mask))
        with self._decoder_states() as captured:
            if self.is_encoder_decoder:
                encoded = self.llm.get_encoder()(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
                start = self.action_ids.new_full((num_actions, 1), self.llm.config.decoder_start_token_id)
                out = self.llm(
                    encoder_outputs=(encoded.last_hidden_state.repeat_interleave(num_actions, 0),), attention_mask=prompt_mask,
                    decoder_input_ids=torch.cat([start, self.action_ids[:, :-1]], 1).repeat(num_rows, 1),
                    decoder_attention_mask=self.action_mask.repeat(num_rows, 1), use_cache=False,
                )
                hidden = self._value_input(captured[0][::num_actions, 0], encoded, tokens.attention_mask)
            else:
                # The prompt's last token and the action's tokens but its last predict the action's tokens.
                mask = torch.cat([prompt_mask, self.action_mask[:, 1:].repeat(num_rows, 1)], 1)
                out = self.llm(
                    input_ids=torch.cat([prompt_ids, self.action_ids[:, :-1].repeat(num_rows, 1)], 1), attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=False, logits_to_keep=width,
                )
                hidden = captured[0][::num_actions, prompt_ids.shape[1] - 1]
        return hidden, out.logits.reshape(num_rows, num_actions * width, -1)

    def _final_hidden(self, tokens) -> torch.Tensor:
        """The heads' input alone, for the action-head path: no vocabulary projection, no cache."""
        if self.is_encoder_decoder:
            encoded = self.llm.get_encoder()(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
            start = torch.full((len(encoded), 1), self.llm.config.decoder_start_token_id, device=self.device)
            out = self.llm.get_decoder()(input_ids=start, encoder_hidden_states=encoded, encoder_attention_mask=tokens.attention_mask, use_cache=False)
            return out.last_hidden_state[:, 0]
        positions = (tokens.attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.llm.get_decoder()(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, position_ids=positions, use_cache=False)
        return out.last_hidden_state[:, -1]


# -----------------------------------------------------------------------------------------------------------------
# Demonstrations: the bot's episodes, or a trajectories file, split by episode
# -----------------------------------------------------------------------------------------------------------------


def generate_demos(env_id: str, action_space: str, num_envs: int, num_transitions: int, seed: int, num_observations: int,
                   stop=lambda: False) -> list[dict]:
    """BabyAIBot's episodes on levels seed, seed + 1, ..., prompts built as glam_ppo.py builds them while acting.

    Whole episodes are played; the one that reaches `num_transitions` is cut there, and those still running dropped.
    When `stop()` turns true, the episodes finished so far.
    """
    envs = TextVecEnv(env_id, num_envs, action_space, num_observations=num_observations)
    level_seeds = itertools.count(seed)
    episodes, bots, total = [], [None] * num_envs, 0

    def start(index):
        level_seed = next(level_seeds)
        envs.start_episode(index, level_seed)
        bots[index] = BabyAIBot(envs.envs[index].unwrapped)
        return {"env_id": env_id, "seed": level_seed, "prompts": [], "actions": []}

    running = [start(index) for index in range(num_envs)]
    progress = tqdm(total=num_transitions, unit="transition", desc="bot demonstrations", dynamic_ncols=True)
    while total < num_transitions and not stop():
        prompts = envs.prompts()
        actions = [int(bot.replan()) for bot in bots]
        for episode, prompt, action in zip(running, prompts, actions):
            episode["prompts"].append(prompt)
            episode["actions"].append(envs.actions[action])
        _, _, dones, finished = envs.step(actions)
        for index, outcome in zip(np.flatnonzero(dones), finished):
            kept = min(outcome["length"], num_transitions - total)
            if kept > 0:
                episode = running[index]
                episode["prompts"], episode["actions"] = episode["prompts"][:kept], episode["actions"][:kept]
                episodes.append({**episode, **outcome, "return": float(outcome["return"]), "success": bool(outcome["success"])})
                progress.update(kept)
                total += kept
            running[index] = start(index)
    progress.close()
    return episodes


def write_demos(path: str, episodes: list[dict]):
    with open(path, "w") as f:
        for episode in episodes:
            f.write(json.dumps(episode, ensure_ascii=False) + "\n")


def read_demos(path: str, actions: list[str]) -> list[dict]:
    """Episodes of a trajectories file, each with "prompts" and "actions" (strings of `actions`), checked line by line."""
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as error:
        raise UsageError(f"cannot read demonstrations {path!r}: {error.strerror}") from None
    episodes = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            episode = json.loads(line)
            prompts, episode_actions = episode["prompts"], episode["actions"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UsageError(
                f"{path}:{number} is not a trajectory: expected one JSON object per line with \"prompts\" and \"actions\" "
                "lists, as zero_shot_eval.py --save-trajectories writes"
            ) from None
        unknown = sorted(set(episode_actions) - set(actions))
        if unknown or len(prompts) != len(episode_actions):
            problem = f"actions {unknown} are not among {actions}" if unknown else "has a different number of prompts and actions"
            raise UsageError(f"{path}:{number} {problem}; check --env-id and --action-space")
        episodes.append(episode)
    if len(episodes) < 2:
        raise UsageError(f"{path} holds {len(episodes)} episode(s); behavioural cloning needs at least 2 (training and held out)")
    return episodes


def split_demos(episodes: list[dict], actions: list[str], holdout_fraction: float, seed: int):
    """(training, held-out) lists of (prompt, action index), split by episode so no level is in both."""
    order = np.random.default_rng(seed).permutation(len(episodes))
    num_holdout = min(len(episodes) - 1, max(1, round(holdout_fraction * len(episodes))))
    action_index = {action: index for index, action in enumerate(actions)}

    def transitions(indices):
        return [(prompt, action_index[action]) for i in indices for prompt, action in zip(episodes[i]["prompts"], episodes[i]["actions"])]

    return transitions(order[num_holdout:]), transitions(order[:num_holdout])


# -----------------------------------------------------------------------------------------------------------------
# The loss: minus the log-likelihood of the demonstrated action, the very score the policy samples from
# -----------------------------------------------------------------------------------------------------------------


def action_nll(agent: GlamAgent, prompts, action_indices: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed -log P(action tokens | prompt), number of tokens summed) for demonstrated actions.

    The targets are the scorer's own action tokens (T5: ending in </s>; decoder-only: no <s>, an </s> appended;
    --prompt-format chat: the reply through the template's end-of-turn token), so the summed loss of a transition is
    exactly minus the score that GlamAgent gives its action. Padding is -100.
    """
    targets, target_mask = agent.action_ids[action_indices], agent.action_mask[action_indices]
    labels = targets.masked_fill(target_mask == 0, -100)
    tokens, _ = agent.tokenize_prompts(prompts)
    if agent.is_encoder_decoder:
        # The decoder reads the labels shifted right (no `labels=`: the model's own loss would be computed for nothing).
        decoder_input_ids = agent.llm.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = agent.llm(
            input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, decoder_input_ids=decoder_input_ids, use_cache=False
        ).logits
    else:
        # Prompts left-padded, actions right after them: the action tokens sit in the last positions of every row.
        input_ids = torch.cat([tokens.input_ids, targets], dim=1)
        attention = torch.cat([tokens.attention_mask, target_mask], dim=1)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = agent.llm(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=targets.shape[1] + 1, use_cache=False
        )
        logits = out.logits[:, :-1]
    nll = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="sum")
    return nll, int(target_mask.sum())


# -----------------------------------------------------------------------------------------------------------------
# The evaluations: held-out action accuracy, and success in the env
# -----------------------------------------------------------------------------------------------------------------

EVAL_SEED_OFFSET = 10_000_000  # evaluation levels start here, far past any demonstration's level seed


def success_interval(successes: int, episodes: int, z: float = 2.576) -> tuple[float, float]:
    """The 99% Wilson score interval of a success rate: inside [0, 1], and never of zero width (0/50 gives [0, 0.117]).
    Differs from the original: the paper's interval is the normal one, mean +- 2.576 std / sqrt(n), of zero width there."""
    rate, spread = successes / episodes, z * z / episodes
    centre = (rate + spread / 2) / (1 + spread)
    half_width = z / (1 + spread) * math.sqrt(rate * (1 - rate) / episodes + spread / (4 * episodes))
    # At 0 and at n successes a bound is exactly 0 or 1, which rounding would miss by an ulp.
    return (0.0 if successes == 0 else centre - half_width), (1.0 if successes == episodes else centre + half_width)


@torch.no_grad()
def action_accuracy(agent: GlamAgent, transitions, autocast, stop=lambda: False) -> float | None:
    """How often the policy's most likely action is the demonstrated one (None if `stop()` turns true first: the
    transitions are scored a few at a time, so that a stop is seen within seconds)."""
    correct = 0
    for start in range(0, len(transitions), 64):
        if stop():
            return None
        prompts, labels = zip(*transitions[start : start + 64])
        with autocast:
            logits, _ = agent(list(prompts))
        correct += (logits.argmax(-1).cpu() == torch.tensor(labels)).sum().item()
    return correct / len(transitions)


@torch.no_grad()
def evaluate_in_env(agent: GlamAgent, envs: TextVecEnv, episodes: int, first_seed: int, autocast, stop=lambda: False) -> list[dict]:
    """Episodes on levels first_seed, first_seed + 1, ..., actions sampled from the scored policy (as in the paper);
    those finished so far when `stop()` turns true."""
    generator = torch.Generator().manual_seed(first_seed)  # its own stream: evaluating never shifts training's
    seeds = iter(range(first_seed, first_seed + episodes))
    active = [False] * len(envs)
    for index in range(min(episodes, len(envs))):
        envs.start_episode(index, next(seeds))
        active[index] = True
    results = []
    while any(active) and not stop():
        indices = [index for index in range(len(envs)) if active[index]]
        prompts = envs.prompts()
        with autocast:
            logits, _ = agent([prompts[index] for index in indices])
        actions = np.zeros(len(envs), dtype=int)  # inactive envs turn in place; their episodes are not counted
        actions[indices] = torch.multinomial(logits.float().softmax(-1).cpu(), 1, generator=generator).squeeze(1).numpy()
        _, _, dones, finished = envs.step(actions)
        for index, episode in zip(np.flatnonzero(dones), finished):
            if not active[index]:
                continue
            results.append(episode)
            level_seed = next(seeds, None)
            if level_seed is None:
                active[index] = False
            else:
                envs.start_episode(index, level_seed)
    return results


def log_evaluation(writer, accuracy: float, episodes: list[dict], global_step: int):
    """An evaluation's numbers in TensorBoard, and one line with the success rate's 99% interval."""
    successes = sum(bool(episode["success"]) for episode in episodes)
    success = successes / len(episodes)
    writer.add_scalar("charts/action_accuracy", accuracy, global_step)
    writer.add_scalar("charts/success_rate", success, global_step)
    writer.add_scalar("charts/episodic_return", np.mean([episode["return"] for episode in episodes]), global_step)
    writer.add_scalar("charts/episodic_length", np.mean([episode["length"] for episode in episodes]), global_step)
    low, high = success_interval(successes, len(episodes))
    tqdm.write(
        f"{global_step} transitions: held-out action accuracy {accuracy:.3f}, success rate {success:.3f} [{low:.3f}, {high:.3f}] "
        f"(99% interval, {len(episodes)} episodes)"
    )


def main(args: Args):
    stop = StopRequest()  # Ctrl-C or SIGTERM: keep what is done (a checkpoint, the finished demonstrations), then exit
    run_name = os.path.basename(os.path.normpath(args.resume)) if args.resume else f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = args.resume or make_folder(os.path.join("runs", run_name), "the run folder")
    video_dir = args.capture_video and make_folder(os.path.join("videos", run_name), "the video folder")

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    configure_matmul_precision(device, args.tf32)

    # The model first, right after seeding: a random base (tiny models, --no-pretrained) is then rebuilt from the seed alone.
    llm, tokenizer, saved = load_run(args)
    if args.gradient_checkpointing:
        checkpoint_activations(llm)
    # The evaluation's envs: no more than its episodes, as an env never started cannot be stepped.
    eval_envs = TextVecEnv(args.env_id, min(args.num_envs, args.eval_episodes), args.action_space, num_observations=args.num_observations)
    agent = GlamAgent(llm, tokenizer, eval_envs.actions, args.scoring, False, args.score_batch_size, prompt_format=args.prompt_format).to(device)
    writer = open_logs(args, run_name, run_dir, resumed_at=saved["trainer"]["global_step"] if saved else None)

    # Demonstrations: a user's file, or the bot's, written to the run folder once so that they can be reused.
    demos_path = args.demos or os.path.join(run_dir, "demos.jsonl")
    if args.demos is None and not os.path.exists(demos_path):
        episodes = generate_demos(args.env_id, args.action_space, args.num_envs, args.num_transitions, args.seed, args.num_observations,
                                  lambda: stop.requested)
        if stop.requested:  # the finished episodes are kept, as a file that --demos reads
            partial_path = os.path.join(run_dir, "demos.partial.jsonl")
            write_demos(partial_path, episodes)
            made = sum(len(episode["actions"]) for episode in episodes)
            print(f"stopped making demonstrations: the {made} transitions made are in {partial_path} (train on them with --demos {partial_path})")
            writer.close()
            return
        write_demos(demos_path + ".tmp", episodes)
        os.rename(demos_path + ".tmp", demos_path)
    train_set, holdout_set = split_demos(read_demos(demos_path, eval_envs.actions), eval_envs.actions, args.holdout_fraction, args.seed)
    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    num_steps = args.num_epochs * steps_per_epoch
    print(f"{len(train_set)} training and {len(holdout_set)} held-out transitions from {demos_path}; {num_steps} optimizer steps")

    optimizer = torch.optim.AdamW(agent.llm.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(args.warmup_fraction * num_steps), num_steps)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    update_size = PassSize(args.grad_accum_batch, "--grad-accum-batch", update_bytes_per_token(llm))
    step, global_step = restore_run(saved, agent, optimizer, scheduler) if saved else (0, 0)
    saved_at = None  # the step of the last checkpoint written
    video_env = TextVecEnv(args.env_id, 1, args.action_space, final_frames=True, num_observations=args.num_observations) if args.capture_video else None

    def evaluate():
        """The held-out action accuracy and the success rate in the env; a stop abandons them, logging nothing."""
        agent.eval()
        accuracy = action_accuracy(agent, holdout_set, autocast, lambda: stop.requested)
        episodes = evaluate_in_env(agent, eval_envs, args.eval_episodes, args.seed + EVAL_SEED_OFFSET, autocast, lambda: stop.requested)
        agent.train()
        if not stop.requested:
            log_evaluation(writer, accuracy, episodes, global_step)

    if step == 0:
        evaluate()
    agent.train()  # dropout on while cloning, as in ordinary fine-tuning
    progress = tqdm(total=num_steps, initial=step, unit="step", dynamic_ncols=True, smoothing=0)  # evaluations included

    def non_finite(what: str) -> FloatingPointError:
        progress.close()
        return FloatingPointError(f"non-finite {what} at step {step + 1}; {last_good(run_dir)}. Try a lower --learning-rate, or without --bf16.")

    start_time, start_global_step = time.time(), global_step
    while step < num_steps and not stop.requested:
        # Each epoch's order comes from (seed, epoch) alone, so a resumed run sees the batches the straight run would.
        epoch, position = divmod(step, steps_per_epoch)
        order = np.random.default_rng([args.seed, epoch]).permutation(len(train_set))
        batch = [train_set[i] for i in order[position * args.batch_size : (position + 1) * args.batch_size]]
        prompts = [prompt for prompt, _ in batch]
        labels = torch.tensor([label for _, label in batch], device=device)
        num_tokens = int(agent.action_mask[labels].sum())
        # A pass size tried again after an out-of-memory error starts from the first try's random state (dropout), as a
        # run with that size from the start would.
        rng_state = torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None

        def batch_gradient(micro_size):
            """The batch's summed loss, its gradient accumulated over passes of micro_size transitions (--grad-accum-batch)."""
            torch.set_rng_state(rng_state[0])
            if rng_state[1] is not None:
                torch.cuda.set_rng_state(rng_state[1], device)
            optimizer.zero_grad()
            total_nll = 0.0
            for micro in even_split(len(batch), micro_size):
                with autocast:
                    nll, _ = action_nll(agent, prompts[micro], labels[micro])
                # The loss is the mean over the batch's action tokens, whatever the split into passes.
                (nll / num_tokens).backward()
                total_nll += nll.item()
            return total_nll

        bc_loss = update_size.run(batch_gradient, len(batch), lambda: max(agent.prompt_lengths(prompts)), device) / num_tokens
        if not math.isfinite(bc_loss):
            raise non_finite("loss")
        if not torch.isfinite(nn.utils.clip_grad_norm_(agent.llm.parameters(), args.max_grad_norm)):
            raise non_finite("gradient")
        optimizer.step()
        # A finite loss and gradient can still make non-finite weights (an infinite learning rate): never act or save with them.
        if not torch.stack([torch.isfinite(p).all() for p in agent.llm.parameters()]).all():
            raise non_finite("weights")
        scheduler.step()
        step += 1
        global_step += len(batch)

        # TRY NOT TO MODIFY: record the loss for plotting purposes
        writer.add_scalar("losses/bc_loss", bc_loss, global_step)
        writer.add_scalar("charts/learning_rate", scheduler.get_last_lr()[0], global_step)
        sps = int((global_step - start_global_step) / (time.time() - start_time))
        writer.add_scalar("charts/SPS", sps, global_step)
        progress.update(1)
        progress.set_postfix(loss=f"{bc_loss:.3f}", SPS=sps)
        if args.capture_video and step % args.video_interval == 0:
            record_video(args, agent, video_env, autocast, video_dir, step)
        if global_step // args.eval_every > (global_step - len(batch)) // args.eval_every or step == num_steps:
            evaluate()
            save_checkpoint(run_dir, args, agent, optimizer, scheduler, progress, step=step, global_step=global_step, num_steps=num_steps)
            saved_at = step
    stopped = stop.requested and step < num_steps
    if stopped and saved_at != step:  # a stop during an evaluation comes after that step's checkpoint
        save_checkpoint(run_dir, args, agent, optimizer, scheduler, progress, step=step, global_step=global_step, num_steps=num_steps)
    progress.close()
    writer.close()
    if stopped:
        print(f"saved {run_dir}/checkpoint at step {step}; continue with: python bc_finetune.py --resume {run_dir}")
        return
    if stop.requested:
        print("the final evaluation was stopped before it finished, and is not logged")
    print(
        f"done: {global_step} transitions; checkpoint in {run_dir}/checkpoint (evaluate with zero_shot_eval.py --model "
        f"{run_dir}, or continue with PPO: glam_ppo.py --init-from {run_dir}); logs: tensorboard --logdir runs"
    )


# =================================================================================================================
# APPENDICES: what main() calls besides the method itself
# =================================================================================================================


# -----------------------------------------------------------------------------------------------------------------
# A. The levels of BabyAI-Text that minigrid lacks
# -----------------------------------------------------------------------------------------------------------------

TASK_KINDS = ("goto", "pickup", "open", "putnext", "pick_up_seq_go_to")
HELD_OUT_PAIRS = ("yellow box", "red key", "red door", "green ball", "grey door")
OBJECT_TYPES = ("key", "ball", "box")


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


# -----------------------------------------------------------------------------------------------------------------
# B. Loading models, the model families a packed pass can score, and the tokens an action is scored on
# -----------------------------------------------------------------------------------------------------------------

MODEL_ALIASES = {f"flan-t5-{size}": f"google/flan-t5-{size}" for size in ("small", "base", "large", "xl", "xxl")}
TINY_MODELS = ("tiny-t5", "tiny-causal")
# Every word and punctuation mark of BabyAI-Text's prompts, missions and actions (the French probe's too): the tiny
# models' vocabulary.
VOCABULARY_TEXT = """Possible action of the agent: Goal of the agent Observation Action, You see a wall steps step forward left right
and carry open closed locked door key ball box goal lava agent floor empty unseen object red green blue purple yellow grey
turn left, turn right, go forward, pick up, drop, toggle, sleep, do nothing, think, rotate left, rotate right, move ahead,
take, release, switch, go to the a put next then after you in front of behind on your I would like the agent to You have
Actions possibles pour l'agent: But de l'agent tourner à gauche, droite, aller tout droit, attraper, lâcher, basculer, Tu
vois un une mur pas devant et portes ouverte fermée clef porte balle boîte rouge verte bleue violette jaune grise la
0 1 2 3 4 5 6 7 8 9"""


def build_tiny_model(kind: str):
    """A small random model with a word-level tokenizer over the BabyAI-Text vocabulary, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    words = sorted(set(re.findall(r"\w+|[^\w\s]+", VOCABULARY_TEXT)))
    vocab = {token: index for index, token in enumerate(["<pad>", "</s>", "<unk>", "<s>"] + words)}
    tokenizer_core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer_core.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "tiny-t5":  # like T5's own tokenizer: inputs and targets end with </s>
        tokenizer_core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    else:  # like Llama's: a <s> in front
        tokenizer_core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer_core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>")
    # Eager attention: at this size, SDPA's mask building costs more than the attention itself (2x slower on CPU).
    size = dict(vocab_size=len(vocab), pad_token_id=0, eos_token_id=1, attn_implementation="eager")
    if kind == "tiny-t5":
        return T5ForConditionalGeneration(T5Config(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, decoder_start_token_id=0, **size)), tokenizer
    config = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=2048, bos_token_id=3, **size,
    )
    return LlamaForCausalLM(config), tokenizer


def load_llm(name: str, pretrained: bool = True, load_embedding: bool = False, attn_implementation: str | None = None):
    """(model, tokenizer) for an alias, a hub id (from the local cache, else downloaded; HF_HUB_OFFLINE=1 keeps
    transformers off the network), a save_pretrained folder, a .gguf file, or a tiny offline model."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    # peft (0.21) reads transformers' deprecated `is_gradient_checkpointing`: nothing a user can act on.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    if name in TINY_MODELS:
        return build_tiny_model(name)
    source = os.path.expanduser(MODEL_ALIASES.get(name, name))
    if source.startswith((".", "/")) and not os.path.exists(source):
        raise UsageError(f"cannot load model {name!r}: no such file or folder")
    where = {"pretrained_model_name_or_path": source}
    if source.endswith(".gguf"):
        where = {"pretrained_model_name_or_path": os.path.dirname(os.path.abspath(source)), "gguf_file": os.path.basename(source)}
    # Float32 whatever the checkpoint stores: most hub checkpoints are bf16, whose spacing near 0.02 (1.2e-4) is far
    # above an Adam step at the paper's lr 1e-6, so bf16 weights would never move. --bf16 is autocast over these.
    model_kwargs = {"dtype": torch.float32, **({"attn_implementation": attn_implementation} if attn_implementation else {})}
    try:
        tokenizer, config = AutoTokenizer.from_pretrained(**where), AutoConfig.from_pretrained(**where)
        model_cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        if pretrained:
            model = model_cls.from_pretrained(**where, **model_kwargs)
        else:
            model = model_cls.from_config(config, **model_kwargs)
            if load_embedding:  # the NPAE baseline: pretrained embeddings in a random model
                pretrained_state = model_cls.from_pretrained(**where, dtype=torch.float32).state_dict()
                model.load_state_dict({k: v for k, v in pretrained_state.items() if "embed" in k or "shared" in k}, strict=False)
    except (OSError, ValueError) as error:
        raise UsageError(
            f"cannot load model {name!r} ({one_line(error)}). Offline, use --model tiny-t5 or tiny-causal, a folder written by "
            f"save_pretrained, a .gguf file or a model in the local cache; online, check the hub id (aliases: {', '.join(MODEL_ALIASES)})"
        ) from None
    if "gguf_file" in where:  # dequantized to float32 as it loads: an ordinary model, which a checkpoint can save
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
    if tokenizer.pad_token is None:  # padding is masked everywhere: any token will do
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.convert_ids_to_tokens(0)
    return model, tokenizer


def one_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def packing_plan(llm) -> tuple[str, int | None, bool, bool]:
    """How a packed pass scores this model: (its family, the sliding window its block mask needs or None, whether that
    mask is one per layer type, whether to pack at all); one line refusing what no pass can score."""
    config = llm.config
    if config._attn_implementation not in ("eager", "sdpa"):  # the two that take a 4D block mask as it is
        raise UsageError(
            f"attention implementation {config._attn_implementation!r} cannot take the block mask that scores a "
            "prompt's actions in one pass; load the model with attn_implementation='sdpa' (the default) or 'eager'"
        )
    text_config, family = config.get_text_config(), config.model_type
    layer_types = getattr(text_config, "layer_types", None)
    other_layers = set(layer_types or []) - {"full_attention", "sliding_attention"}
    if other_layers:
        raise UsageError(
            f"model family {family!r} has {', '.join(sorted(other_layers))} layers, whose state runs along the whole sequence, "
            "so that no pass can score an action apart from the others; use a model whose layers are all attention layers "
            "(Llama, Qwen, Gemma, Mistral, Phi, T5, ...)"
        )
    # Sliding-window attention: the window goes into the block mask, for every layer where no `layer_types` are
    # given (Mistral, Phi-3), else for the sliding ones, which then take a mask of their own (Qwen2/3, Gemma-2/3).
    sliding_window = getattr(text_config, "sliding_window", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        sliding_window = None
    # ALiBi models (Bloom, Falcon with alibi=True) build their position bias from a 2D mask, which cannot describe
    # packed blocks: they are scored one (prompt, action) pair per sequence (`_pair_pass`), exact and slower.
    packed = not (family == "bloom" or getattr(text_config, "alibi", False))
    return family, sliding_window, layer_types is not None and sliding_window is not None, packed


# The families whose scores the tests check against one pass per (prompt, action) pair (tests/test_families.py); any
# other is checked when its agent is built (BART-like models, whose decoder positions run across the packed blocks, fail).
TESTED_FAMILIES = {"t5", "mt5", "llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3_text", "phi3", "phi", "gpt2", "gpt_neox", "opt", "bloom", "falcon"}


@torch.no_grad()
def check_packed_scoring(agent: GlamAgent):
    """A family the tests have not covered: a short and a long prompt (longer than BabyAI-Text's longest, so that an
    attention window this code does not know of shows) scored as the agent will score them and one (prompt, action)
    pair at a time, in float32; a difference or a failure refuses the model, so none is trained on wrong scores."""
    sentences = ["You see a wall 3 steps forward", "You see a red key 2 steps left and 1 step forward", "You see a grey box 2 steps left"]
    many = [f"You see a {colour} {kind} {k % 3 + 1} steps right and {k % 6 + 1} steps forward" for k, (colour, kind) in
            enumerate((colour, kind) for colour in COLOR_NAMES for kind in OBJECT_TYPES)]
    prompts = [build_prompt("go to the red key", agent.actions, [sentences], []),
               build_prompt("go to the red key", agent.actions, [many] * 3, agent.actions[:2])]
    was_training, precision = agent.llm.training, torch.get_float32_matmul_precision()
    agent.to(next(agent.llm.parameters()).device).llm.eval()
    torch.set_float32_matmul_precision("highest")  # no TF32: the two ways must agree to float32 rounding
    refusal = f"model family {agent.family!r} is not among those tested, and "
    try:
        with torch.autocast(agent.device.type, enabled=False):
            hidden, scores = agent._score_tokens(agent.tokenize_prompts(prompts)[0])
            alone = [agent._score_tokens(agent.tokenize_prompts([prompt])[0], packed=False) for prompt in prompts]
    except (TypeError, ValueError, RuntimeError) as error:
        raise UsageError(
            f"{refusal}scoring a prompt's actions fails on it ({type(error).__name__}: {one_line(error)}); use a tested family "
            "(README: model families) or --action-heads"
        ) from None
    finally:
        torch.set_float32_matmul_precision(precision)
        agent.llm.train(was_training)
    pair_hidden, pair_scores = (torch.cat(parts) for parts in zip(*alone))
    error = max((scores - pair_scores).abs().max(), (hidden - pair_hidden).abs().max() / pair_hidden.abs().max().clamp(min=1))
    if not error <= 1e-3:
        raise UsageError(
            f"{refusal}scoring all actions of a prompt in one pass gives other numbers than scoring each action alone (by up "
            f"to {error:.2g}), so it would be trained on wrong scores; use a tested family (README: model families) or --action-heads"
        )


def joint_action_tokens(agent: GlamAgent) -> list[list[int]]:
    """Decoder-only: each action's tokens as they are when `prompt + action` is tokenised as one text.

    Tokenised alone after the prompt's trailing space, a byte-level BPE gives `Ġ` then `turn`, `Ġleft`, tokens the
    model never produces there, where the joint text reads `Ġturn`, `Ġleft` (SentencePiece: `▁turn`). So the prompt is
    read without its trailing space, and an action is the rest of the joint text's tokens, checked to split exactly
    after every `Action k: ` a prompt can end with (chat: the reply after the generation prompt, the same way).
    """
    contexts = []  # the texts of prompts ending in `Action 0: `, `Action 1: ` and `Action 2: `
    for k in range(3):
        history = [agent.actions[i % len(agent.actions)] for i in range(k)]
        context = agent.model_text(build_prompt("go to the red ball", agent.actions, [["You see a wall 2 steps forward"]] * (k + 1), history))
        contexts.append((context, agent.tokenize_texts([context]).input_ids[0]))
    eos = agent.tokenizer.eos_token_id
    if eos is not None and contexts[0][1][-1:] == [eos]:
        raise UsageError(
            f"this model's tokenizer appends its EOS token {agent.tokenizer.eos_token!r} to every text, so a prompt's tokens "
            "are not the start of the tokens of prompt + action; load it without (for instance add_eos_token=False)"
        )
    token_lists = []
    for action in agent.actions:
        found = set()
        for context, context_ids in contexts:
            joint_ids = agent.tokenize_texts([context + agent.reply_text(action)]).input_ids[0]
            if joint_ids[: len(context_ids)] != context_ids or len(joint_ids) == len(context_ids):
                raise UsageError(
                    f"this model's tokenizer merges the end of the prompt ({context[-10:]!r}) and the action {action!r} into "
                    "shared tokens, so no split of `prompt + action` into prompt tokens and action tokens is exact and the "
                    "action's log-likelihood is not defined; use a model with another tokenizer"
                )
            found.add(tuple(joint_ids[len(context_ids) :]))
        if len(found) > 1:
            raise UsageError(f"this model's tokenizer gives the action {action!r} different tokens after different prompts")
        token_lists.append(list(found.pop()))
    return token_lists


def render_chat(tokenizer, messages, **kwargs) -> str:
    """The chat template's text for `messages`; templates that date the conversation (Llama 3.1-3.3) get a fixed date,
    so that the text a model reads does not change with the calendar between training, resuming and evaluating."""
    return tokenizer.apply_chat_template(messages, tokenize=False, date_string="26 Jul 2024", **kwargs)


def chat_reply_format(tokenizer, is_encoder_decoder: bool) -> tuple[str, str]:
    """What the chat template writes around the assistant's reply, read off a reply it renders: the whitespace before
    it (Mistral's ` `), and the end-of-turn text after it, through its first special token (`<|im_end|>`, Llama 3's
    `<|eot_id|>`; Phi-3's `<|end|>` without the newline and EOS that follow it)."""
    if is_encoder_decoder or not getattr(tokenizer, "chat_template", None):
        raise UsageError(
            "--prompt-format chat: an encoder-decoder model reads the prompt in its encoder, not in a chat; drop the flag"
            if is_encoder_decoder else
            "--prompt-format chat: this model's tokenizer has no chat template; use --prompt-format raw, or an instruct model"
        )
    user, reply = [{"role": "user", "content": "Goal of the agent: go to the red ball"}], "turn left"
    opening = render_chat(tokenizer, user, add_generation_prompt=True)
    whole = render_chat(tokenizer, user + [{"role": "assistant", "content": reply}])
    before, found, after = whole.removeprefix(opening).partition(reply)
    if not whole.startswith(opening) or not found or before.strip() or not after.strip():
        raise UsageError(
            "--prompt-format chat: this model's chat template does not write the assistant's reply right after its "
            "generation prompt, closed by an end-of-turn token; use --prompt-format raw"
        )
    added = (token.content for token in tokenizer.added_tokens_decoder.values() if token.special)
    special = [token for token in {*tokenizer.all_special_tokens, *added} if token and token in after]
    if special:  # the turn ends with its first special token: what follows it (a newline, an EOS) is not the reply's
        start = min(after.index(token) for token in special)
        after = after[: max(start + len(token) for token in special if after.startswith(token, start))]
    return before, after.rstrip()


def load_policy_model(args: Args, checkpoint: str | None):
    """The LLM to train: from args.model, or from a checkpoint's model folder (a LoRA adapter over args.model)."""
    if checkpoint is None:
        llm, tokenizer = load_llm(args.model, args.pretrained, args.load_embedding)
        if args.lora_r:
            from peft import LoraConfig, get_peft_model

            task_type = "SEQ_2_SEQ_LM" if llm.config.is_encoder_decoder else "CAUSAL_LM"
            llm = get_peft_model(llm, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules="all-linear", task_type=task_type))
        return llm, tokenizer
    model_dir = os.path.join(checkpoint, "model")
    if args.lora_r:
        from peft import PeftModel

        base, tokenizer = load_llm(args.model, args.pretrained, args.load_embedding)
        return PeftModel.from_pretrained(base, model_dir, is_trainable=True), tokenizer
    # A saved config does not keep the attention implementation; a tiny model must stay eager to resume exactly.
    return load_llm(model_dir, attn_implementation="eager" if args.model in TINY_MODELS else None)


def configure_matmul_precision(device: torch.device, tf32: bool):
    """On CUDA, let float32 matmuls run on TF32 tensor cores (fp32 accumulation): several times faster on A100/H100."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high" if tf32 else "highest")


def checkpoint_activations(llm):
    """Recompute each transformer block in the backward pass instead of keeping its activations: torch's composable
    checkpoint, since transformers' gradient_checkpointing_enable() acts in train mode only, and GLAM runs in eval mode
    (dropout off). Parameter names do not change, nor do checkpoints."""
    from torch.distributed._composable import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    blocks = [module for module in llm.modules() if isinstance(module, GradientCheckpointingLayer)]
    if not blocks:
        raise UsageError("--gradient-checkpointing: transformers marks no block of this model as checkpointable; drop the flag")
    for block in blocks:
        checkpoint(block)


# -----------------------------------------------------------------------------------------------------------------
# C. Flags: parsing and checking
# -----------------------------------------------------------------------------------------------------------------


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


# Flags that may differ between a run and its resumption; any other difference makes the checkpoint incompatible.
RESUMABLE_CHANGES = {
    "track", "wandb_project_name", "wandb_entity", "resume", "tf32", "gradient_checkpointing", "score_batch_size", "grad_accum_batch",
    "capture_video", "video_interval", "video_format",
}


def finish_args(args: Args) -> Args:
    """One clear error for every flag out of range and every inconsistent combination."""
    check_ranges(args, ARG_RANGES)
    if not args.exp_name or os.sep in args.exp_name or "/" in args.exp_name:
        raise UsageError(f"--exp-name {args.exp_name!r} names a run folder: give a name without '/'")
    if args.capture_video and args.video_format == "mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise UsageError("--video-format mp4 needs imageio-ffmpeg (pip install imageio-ffmpeg); or give --video-format gif")
    if args.load_embedding and args.pretrained:
        raise UsageError("--load-embedding copies pretrained embeddings into a random model; add --no-pretrained")
    if args.track and importlib.util.find_spec("wandb") is None:
        raise UsageError("--track needs Weights and Biases: pip install wandb")
    if args.demos is None and len(action_names(args.action_space)) < len(ACTIONS):
        raise UsageError("the bot's demonstrations need all six actions; use --action-space canonical or augmented")
    make_env(args.env_id)  # an unknown env id fails here, before any model is loaded
    if args.demos is not None and not os.path.isfile(args.demos):
        raise UsageError(f"cannot read demonstrations {args.demos!r}: no such file")
    return args


def parse_args(argv=None) -> Args:
    """tyro's Args; with --resume, the saved run's args are the defaults, so only flags typed again can differ."""
    args = tyro.cli(Args, args=argv)
    if args.resume is None:
        return finish_args(args)
    try:
        saved = Args(**saved_args(args.resume))
    except TypeError as error:  # another script's run, or another version's
        raise UsageError(f"cannot resume {args.resume}: its args.json has flags that bc_finetune.py does not know ({one_line(error)})") from None
    args = tyro.cli(Args, args=argv, default=saved)
    changed = [k for k, v in asdict(args).items() if v != getattr(saved, k) and k not in RESUMABLE_CHANGES]
    if changed:
        flags = ", ".join(f"--{k.replace('_', '-')} {getattr(args, k)} (run has {getattr(saved, k)})" for k in changed)
        raise UsageError(f"cannot resume {args.resume} with different settings: {flags}; drop these flags")
    return finish_args(args)


# -----------------------------------------------------------------------------------------------------------------
# D. Logs, checkpoints, resume and stopping
# -----------------------------------------------------------------------------------------------------------------


def make_folder(folder: str, what: str) -> str:
    """The folder, made now (before any model is loaded), or one line saying why it cannot be."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot make {what} {folder}: {error.strerror or error}") from None
    return folder


def open_logs(args: Args, run_name: str, run_dir: str, resumed_at: int | None):
    """TensorBoard's writer, and W&B's run with --track. A run resumed at transition `resumed_at` drops what it logged
    after its checkpoint, so that no step is logged twice."""
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args), name=run_name,
                   save_code=True, resume="allow", id=run_name)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(run_dir, purge_step=None if resumed_at is None else resumed_at + 1)
    if resumed_at is None:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])))
    return writer


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


def load_run(args: Args):
    """(model, tokenizer, saved): the model to train and, with --resume, the heads and trainer state of the run's newest
    checkpoint that loads. One that does not (a truncated or unreadable file) is named in one line, and the run goes on
    from the one before it."""
    if args.resume is None:
        return (*load_policy_model(args, None), {})
    folders = checkpoint_folders(args.resume)
    for index, folder in enumerate(folders):
        try:
            llm, tokenizer = load_policy_model(args, folder)
            saved = {name: torch.load(os.path.join(folder, f"{name}.pt"), map_location="cpu", weights_only=False) for name in ("heads", "trainer")}
            break
        except Exception as error:  # whatever a damaged file raises (safetensors, torch.load)
            if index + 1 == len(folders):
                raise UsageError(f"cannot resume {args.resume}: {folder} does not load ({one_line(error)})") from None
            print(f"{folder} does not load ({one_line(error)}); going on from {folders[index + 1]}", file=sys.stderr)
    if saved["trainer"]["step"] >= saved["trainer"]["num_steps"]:
        raise UsageError(
            f"{args.resume} has made all its {saved['trainer']['num_steps']} optimizer steps: nothing to resume (evaluate it "
            f"with zero_shot_eval.py --model {args.resume})"
        )
    return llm, tokenizer, saved


def restore_run(saved: dict, agent: GlamAgent, optimizer, scheduler) -> tuple[int, int]:
    """The value head, the optimizer, the schedule and the random number generators as the checkpoint left them; its
    (step, global_step)."""
    trainer = saved["trainer"]
    agent.value_head.load_state_dict(saved["heads"]["value_head"])
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    random.setstate(trainer["rng"]["python"])
    np.random.set_state(trainer["rng"]["numpy"])
    torch.set_rng_state(trainer["rng"]["torch"])
    if "cuda" in trainer["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(trainer["rng"]["cuda"])
    return trainer["step"], trainer["global_step"]


def save_checkpoint(run_dir: str, args: Args, agent: GlamAgent, optimizer, scheduler, progress: tqdm, **counters):
    """Writes runs/<run>/checkpoint in glam_ppo.py's layout: model/, heads.pt, trainer.pt (the optimizer, the schedule,
    the RNG states and the counters), args.json."""

    def write(folder):
        agent.llm.save_pretrained(os.path.join(folder, "model"))
        agent.tokenizer.save_pretrained(os.path.join(folder, "model"))
        # The value head is not trained by cloning; it is kept so that PPO (glam_ppo.py --init-from) starts from it.
        torch.save({"value_head": agent.value_head.state_dict()}, os.path.join(folder, "heads.pt"))
        rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        trainer = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **counters, "rng": rng}
        torch.save(trainer, os.path.join(folder, "trainer.pt"))
        with open(os.path.join(folder, "args.json"), "w") as f:
            json.dump(asdict(args), f, indent=2)

    commit_checkpoint(run_dir, write, progress)


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


class StopRequest:
    """First Ctrl-C, or SIGTERM (SLURM pre-emption, `timeout`): finish the current step, or abandon the demonstrations or
    the evaluation being made, keep what is done (a checkpoint, the finished demonstrations) and exit. A second Ctrl-C
    stops at once; a second SIGTERM changes nothing, so that the save can finish."""

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
            tqdm.write(f"{name}: stopping after this step, keeping what is done (Ctrl-C again to quit at once)")


# -----------------------------------------------------------------------------------------------------------------
# E. Pass sizes, and an allocator that keeps freed buffers
# -----------------------------------------------------------------------------------------------------------------

CPU_PASS_BYTES = 2 << 30  # what an `auto` pass may hold on CPU, by the rule of `PassSize`


class PassSize:
    """The items of one forward pass (--score-batch-size, counted in (prompt, action) pairs; --grad-accum-minibatch).
    A number fixes it. `auto` tries all the items in one pass and, on an out-of-memory error, halves the pass and tries
    again, keeping the size that fits for the rest of the run (as the Hugging Face Trainer does, with accelerate's
    find_executable_batch_size). On CPU, where running out of memory kills the process instead of raising an error,
    `auto` starts from a rule: as many items as CPU_PASS_BYTES holds, at `item_bytes(tokens of the longest prompt)`. A
    pass holds one item (prompt) at least."""

    def __init__(self, setting: int | str, flag: str, item_bytes, pairs_per_item: int = 1):
        self.setting, self.flag, self.item_bytes, self.pairs_per_item, self.fits = setting, flag, item_bytes, pairs_per_item, None

    def most(self, total: int, longest, device: torch.device) -> int:
        """The most items of `total` in one pass; `longest()` gives the longest prompt's tokens, for the CPU rule."""
        if self.setting != "auto":
            return max(1, self.setting // self.pairs_per_item) if self.setting else total
        return min(total, self.fits or total, total if device.type == "cuda" else max(1, CPU_PASS_BYTES // self.item_bytes(longest())))

    def run(self, work, total: int, longest, device: torch.device):
        """work(most): the work of `total` items in passes of at most `most`, again with half the pass after an
        out-of-memory error under `auto`."""
        while True:
            most = self.most(total, longest, device)
            try:
                return work(most)
            except torch.OutOfMemoryError:
                if self.setting != "auto" or most == 1:
                    smaller = "give a smaller number, " if self.setting != "auto" and most > 1 else ""
                    raise UsageError(
                        f"{self.flag} {self.setting}: a pass of {most * self.pairs_per_item} runs out of memory; {smaller}add --bf16, "
                        "--gradient-checkpointing or --lora-r 16, or take a smaller --model"
                    ) from None
            self.fits = most // 2
            tqdm.write(f"{self.flag} auto: {most * self.pairs_per_item} per pass ran out of memory; {self.fits * self.pairs_per_item} from now on")
            if device.type == "cuda":
                torch.cuda.empty_cache()


def update_bytes_per_token(llm):
    """The CPU rule for an update pass, whose activations stay for the backward pass: 100 bytes per token, per unit of
    the hidden state and per layer (78 measured with SmolLM2-135M in float32, benchmark/README.md)."""
    config = llm.config.get_text_config()
    layers = config.num_hidden_layers + getattr(config, "num_decoder_layers", 0)
    return lambda tokens: 100 * config.hidden_size * layers * tokens


def even_split(total: int, most: int) -> list[slice]:
    """`total` items in as few passes of at most `most` as there can be, whose sizes differ by at most one."""
    passes = -(-total // most)
    bounds = [total * k // passes for k in range(passes + 1)]
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


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


# -----------------------------------------------------------------------------------------------------------------
# F. Videos: the level, with the goal and each chosen action and its probability written under it
# -----------------------------------------------------------------------------------------------------------------

VIDEO_FPS = 4
VIDEO_SEED_OFFSET = 20_000_000  # recorded episodes play levels of seeds that no training env is reset with


@torch.no_grad()
def record_episode(agent: GlamAgent, env: TextVecEnv, level_seed: int, autocast) -> tuple[list[np.ndarray], dict]:
    """The frames of an episode of a one-env TextVecEnv (with final_frames) on level `level_seed`, its actions sampled
    from the policy by a generator of their own, so that the run's random streams stay as they were."""
    generator, frames = torch.Generator().manual_seed(level_seed), []
    env.start_episode(0, level_seed)
    goal = env.missions[0]  # (the env starts its next episode as this one ends)
    while True:
        with autocast:
            probs = agent(env.prompts())[0][0].float().softmax(-1).cpu()
        action = int(torch.multinomial(probs, 1, generator=generator))
        frames.append(caption(env.frame(0), goal, f"{env.actions[action]} (p = {probs[action]:.2f})"))
        finished = env.step([action])[3]
        if finished:
            frames.append(caption(finished[0].pop("frame"), goal, "success" if finished[0]["success"] else "failure"))
            return frames, finished[0]


def caption(level: np.ndarray, goal: str, line: str) -> np.ndarray:
    """The level with the goal (in two lines at most) and a line under it, on a band of 64 pixels: the sides stay
    multiples of 16 (for H.264), and every frame of an episode one size."""
    image = Image.new("RGB", (level.shape[1], level.shape[0] + 64), "white")
    image.paste(Image.fromarray(level))
    text = "\n".join(textwrap.wrap(goal, level.shape[1] // 8)[:2] + [line])  # about 8 pixels a character at 14 points
    ImageDraw.Draw(image).text((6, level.shape[0] + 4), text, fill="black", font_size=14)
    return np.asarray(image)


def write_video(frames, path: str):
    """A GIF, or an MP4 (H.264, through the ffmpeg that imageio-ffmpeg ships), of frames of one size."""
    if path.endswith(".gif"):
        first, *rest = (Image.fromarray(frame) for frame in frames)
        return first.save(path, save_all=True, append_images=rest, duration=1000 // VIDEO_FPS, loop=0)
    import imageio_ffmpeg

    size = frames[0].shape[1::-1]  # (width, height)
    writer = imageio_ffmpeg.write_frames(path, size, fps=VIDEO_FPS, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=16)
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def record_video(args: Args, agent: GlamAgent, env: TextVecEnv, autocast, video_dir: str, step: int):
    """An episode on a level that no training env plays, dropout off, to videos/<run>/ (and W&B with --track)."""
    level_seed = args.seed + VIDEO_SEED_OFFSET + step
    agent.eval()
    frames, episode = record_episode(agent, env, level_seed, autocast)
    agent.train()
    path = os.path.join(video_dir, f"step{step}__seed{level_seed}__{'success' if episode['success'] else 'failure'}.{args.video_format}")
    write_video(frames, path)
    if args.track:
        import wandb

        wandb.log({"videos/episode": wandb.Video(path)})


if __name__ == "__main__":
    keep_freed_memory()
    try:
        main(parse_args())
    except (UsageError, FloatingPointError) as error:
        sys.exit(f"bc_finetune.py: error: {error}")
