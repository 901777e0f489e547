"""BabyAI-Text sentences, levels, wrapper and action spaces (reference sections 1-3)."""

import re
from collections import Counter

import numpy as np
import pytest
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX
from minigrid.utils.baby_ai_bot import BabyAIBot

import glam_ppo as g

EMPTY, UNSEEN, WALL = 1, 0, 2


def view(cells, carrying=None):
    """A 7x7x3 image: unseen everywhere, empty floor on the agent's rays, then the given cells."""
    image = np.zeros((7, 7, 3), dtype=np.uint8)
    image[3, :6, 0] = EMPTY
    image[:, 6, 0] = EMPTY
    for (i, j), (kind, colour, state) in cells.items():
        image[i, j] = (OBJECT_TO_IDX[kind], COLOR_TO_IDX[colour], state)
    if carrying:
        image[3, 6] = (OBJECT_TO_IDX[carrying[0]], COLOR_TO_IDX[carrying[1]], 0)
    return image


def test_reference_example_english():
    image = view({(3, 2): ("wall", "grey", 0), (1, 5): ("key", "red", 0), (1, 6): ("box", "grey", 0)})
    assert g.describe(image) == [
        "You see a wall 4 steps forward",
        "You see a red key 2 steps left and 1 step forward",
        "You see a grey box 2 steps left",
    ]


def test_carry_walls_on_three_rays_and_doors():
    image = view(
        {
            (3, 5): ("wall", "grey", 0),
            (0, 6): ("wall", "grey", 0),
            (5, 6): ("door", "red", 0),
            (6, 6): ("wall", "grey", 0),
            (4, 3): ("door", "blue", 2),
            (2, 1): ("ball", "purple", 0),
        },
        carrying=("ball", "blue"),
    )
    assert g.describe(image) == [
        "You carry a blue ball",
        "You see a wall 1 step forward",
        "You see a wall 3 steps left",
        # the open door hides the wall behind it on the right ray; doors always read "a", even "a open"
        "You see a purple ball 1 step left and 5 steps forward",
        "You see a locked blue door 1 step right and 3 steps forward",
        "You see a open red door 2 steps right",
    ]


def test_wall_hidden_by_object_on_ray():
    image = view({(3, 4): ("key", "green", 0), (3, 1): ("wall", "grey", 0)})
    assert g.describe(image) == ["You see a green key 2 steps forward"]


SENTENCE = re.compile(
    r"You carry a \w+ \w+"
    r"|You see a wall \d steps? (forward|left|right)"
    r"|You see a (((open|closed|locked) \w+ door)|\w+ (key|ball|box)) "
    r"(\d steps? (forward|left|right)|\d steps? (left|right) and \d steps? forward)"
)


@pytest.mark.parametrize("env_id", ["BabyAI-GoToLocal-v0", "BabyAI-MixedTrainLocal-v0"])
def test_sentences_of_real_episodes_are_well_formed(env_id):
    env = g.make_env(env_id)
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(200):
        for sentence in obs["sentences"]:
            assert SENTENCE.fullmatch(sentence), sentence
        obs, _, terminated, truncated, _ = env.step(rng.integers(6))
        if terminated or truncated:
            obs, _ = env.reset()


PAIR = re.compile(r"(red|green|blue|purple|yellow|grey) (key|ball|box|door)")


def missions(env_id, seeds, **kwargs):
    env = g.make_env(env_id, **kwargs)
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        yield env.unwrapped, obs["mission"]


def test_mixed_train_draws_every_kind_per_reset_and_never_a_held_out_pair():
    kinds = Counter()
    for level, mission in missions("BabyAI-MixedTrainLocal-v0", range(300)):
        kinds[level.task_kind] += 1
        assert not any(pair in mission for pair in g.HELD_OUT_PAIRS), mission
        assert level.max_steps == (64 if level.task_kind in ("goto", "pickup") else 128), (level.task_kind, level.max_steps)
        assert level.check_objs_reachable(raise_exc=False)
        objects = [obj for obj in level.grid.grid if obj is not None and obj.type in g.OBJECT_TYPES]
        expected = {"goto": 9, "pickup": 9, "putnext": 10, "pick_up_seq_go_to": 10, "open": 9}[level.task_kind]
        assert len(objects) == expected, (level.task_kind, len(objects))
    assert set(kinds) == set(g.TASK_KINDS)
    assert min(kinds.values()) > 300 / 5 * 0.6, kinds


def test_mixed_test_uses_only_held_out_pairs():
    kinds = Counter()
    for level, mission in missions("BabyAI-MixedTestLocal-v0", range(150)):
        kinds[level.task_kind] += 1
        pairs = [" ".join(m) for m in PAIR.findall(mission)]
        assert pairs and all(pair in g.HELD_OUT_PAIRS for pair in pairs), mission
    assert set(kinds) == set(g.TASK_KINDS)


def test_open_kind_has_two_rooms_a_locked_door_and_its_key_beside_the_agent():
    named = 0
    for level, mission in missions("BabyAI-MixedTrainLocal-v0", range(40), task_kind="open"):
        assert level.width == 15 and level.height == 8
        door = level.grid.get(7, next(j for j in range(8) if level.grid.get(7, j).type == "door"))
        assert door.is_locked and door.color in ("yellow", "green", "blue", "purple")
        room = level.room_from_pos(*level.agent_pos)
        assert any(obj.type == "key" and obj.color == door.color for obj in room.objs)
        assert mission in (f"open the {door.color} door", "open the door")
        named += mission != "open the door"
    assert 10 < named < 30


def test_same_seed_same_episode_and_task_kind_argument():
    first = [m for _, m in missions("BabyAI-MixedTrainLocal-v0", range(20))]
    assert first == [m for _, m in missions("BabyAI-MixedTrainLocal-v0", range(20))]
    for level, mission in missions("BabyAI-MixedTrainLocal-v0", range(10), task_kind="putnext"):
        assert mission.startswith(("put the ", "put a ")) and " next to " in mission
    with pytest.raises(ValueError):
        g.make_env("BabyAI-MixedTrainLocal-v0", task_kind="dance")


@pytest.mark.parametrize(
    "env_id, pattern",
    [
        ("BabyAI-PickUpThenGoToLocal-v0", r"pick up (the|a) \w+ \w+, then go to (the|a) \w+ \w+"),
        ("BabyAI-GoToAfterPickUpLocal-v0", r"go to (the|a) \w+ \w+ after you pick up (the|a) \w+ \w+"),
        ("BabyAI-PickUpSeqGoToLocal-v0", r"pick up (the|a) \w+ \w+, then go to (the|a) \w+ \w+|go to (the|a) \w+ \w+ after you pick up (the|a) \w+ \w+"),
        ("BabyAI-PickUpSeqPickUpLocal-v0", r"pick up (the|a) \w+ \w+, then pick up (the|a) \w+ \w+|pick up (the|a) \w+ \w+ after you pick up (the|a) \w+ \w+"),
        ("BabyAI-PickupLocal-v0", r"pick up (the|a) (red|green|blue|purple|yellow|grey) (key|ball|box)"),
        ("BabyAI-GoToLocalS8N16-v0", r"go to (the|a) \w+ \w+"),
    ],
)
def test_single_task_levels_missions(env_id, pattern):
    seen_forms = set()
    for level, mission in missions(env_id, range(10 if env_id == "BabyAI-GoToLocalS8N16-v0" else 40)):  # 16 objects: slow to place
        assert re.fullmatch(pattern, mission), mission
        seen_forms.add("after" if "after" in mission else "then")
        if "Seq" in env_id or "Then" in env_id or "After" in env_id:
            assert not any(pair in mission for pair in g.HELD_OUT_PAIRS)
    if "Seq" in env_id:
        assert seen_forms == {"then", "after"}
    if env_id == "BabyAI-GoToLocalS8N16-v0":
        assert sum(obj is not None and obj.type != "wall" for obj in level.grid.grid) == 16


@pytest.mark.parametrize(
    "env_id", ["BabyAI-MixedTrainLocal-v0", "BabyAI-MixedTestLocal-v0", "BabyAI-PickUpSeqPickUpLocal-v0", "BabyAI-PickupLocal-v0"]
)
def test_levels_are_solvable_by_the_babyai_bot(env_id):
    env = g.make_env(env_id)
    for seed in range(12):
        env.reset(seed=seed)
        bot = BabyAIBot(env.unwrapped)
        for _ in range(env.unwrapped.max_steps):
            _, reward, terminated, truncated, info = env.step(bot.replan())
            if terminated or truncated:
                break
        assert info["success"] and reward == pytest.approx(20 * (1 - 0.9 * env.unwrapped.step_count / env.unwrapped.max_steps))


def test_action_spaces_and_no_op_mapping():
    assert g.action_names("canonical") == ["turn left", "turn right", "go forward", "pick up", "drop", "toggle"]
    assert g.action_names("restricted") == ["turn left", "turn right", "go forward"]
    assert g.action_names("augmented")[6:] == ["sleep", "do nothing", "think"]
    with pytest.raises(g.UsageError, match="canonical, restricted or augmented"):
        g.action_names("everything")
    env = g.make_env("BabyAI-GoToLocal-v0")
    env.reset(seed=0)
    position, direction = env.unwrapped.agent_pos, env.unwrapped.agent_dir
    for useless in (6, 7, 8):
        env.step(useless)
        assert env.unwrapped.agent_pos == position and env.unwrapped.agent_dir == direction


def test_unknown_env_id_lists_valid_ones():
    with pytest.raises(g.UsageError) as error:
        g.make_env("BabyAI-GoToLocl-v0")
    assert "BabyAI-GoToLocal-v0" in str(error.value) and "BabyAI-MixedTrainLocal-v0" in str(error.value)


def test_rejection_messages_stay_off_the_terminal(capsys):
    env = g.make_env("BabyAI-MixedTestLocal-v0")
    for seed in range(30):
        env.reset(seed=seed)
    assert capsys.readouterr().out == ""


def test_vector_env_keeps_three_observations_two_actions_and_resets_history():
    envs = g.TextVecEnv("BabyAI-GoToLocalS5N2-v0", 2, "canonical")
    prompts = envs.reset(seed=0)
    assert prompts[0].count("Observation") == 1 and prompts[0].endswith("\n Action 0: ")
    for _ in range(4):
        prompts, rewards, dones, finished = envs.step([0, 1])
    assert prompts[0].count("Observation") == 3 and prompts[0].count("turn left") == 1 + 2
    assert "Action 0: turn left \n Observation 1" in prompts[0] and prompts[0].endswith("\n Action 2: ")
    for _ in range(30):  # GoToLocalS5N2 lasts at most 25 steps
        prompts, rewards, dones, finished = envs.step([0, 1])
        if dones[0]:
            assert prompts[0].count("Observation") == 1
            assert finished and finished[0]["length"] == 25 and not finished[0]["success"]
            break
    else:
        pytest.fail("episode never ended")
