"""The prompt, byte-exact (reference section 4)."""

import glam_ppo as g

ACTIONS = ["turn left", "turn right", "go forward", "pick up", "drop", "toggle"]


def test_first_step_prompt():
    prompt = g.build_prompt("go to the red ball", ACTIONS, [["You see a wall 2 steps forward", "You see a red ball 1 step left"]], [])
    assert prompt == (
        "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle \n"
        " Goal of the agent: go to the red ball \n"
        " Observation 0: You see a wall 2 steps forward, You see a red ball 1 step left, \n"
        " Action 0: "
    )


def test_three_observations_two_actions():
    prompt = g.build_prompt("go to the red ball", ACTIONS[:3], [["a"], ["b", "c"], []], ["turn left", "go forward"])
    assert prompt == (
        "Possible action of the agent: turn left, turn right, go forward \n"
        " Goal of the agent: go to the red ball \n"
        " Observation 0: a, \n Action 0: turn left \n"
        " Observation 1: b, c, \n Action 1: go forward \n"
        " Observation 2: \n Action 2: "
    )

