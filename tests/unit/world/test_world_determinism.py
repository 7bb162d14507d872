"""The same config gives a byte-identical world; a different seed gives another one."""

import os
import subprocess
import sys
from pathlib import Path

import mechunlearn.world
from mechunlearn.world import World, WorldConfig

REPO_ROOT = Path(mechunlearn.world.__file__).resolve().parents[2]


def test_same_config_same_bytes(world):
    again = World(WorldConfig())
    assert again.to_json() == world.to_json()
    assert again.fingerprint() == world.fingerprint()
    assert again.training_texts() == world.training_texts()


def test_build_alias_is_same_world(world):
    assert World.build(WorldConfig()).fingerprint() == world.fingerprint()


def test_different_seed_differs(world):
    other = World(WorldConfig(seed=1))
    assert other.to_json() != world.to_json()
    assert [p.name for p in other.people] != [p.name for p in world.people]


def test_config_is_part_of_the_fingerprint(world):
    assert World(WorldConfig(bios_per_person=4)).fingerprint() != world.fingerprint()


def test_identical_across_processes_and_hash_seeds(world):
    # str hashing is randomised per process; the world must not depend on it.
    code = "from mechunlearn.world import World; print(World().fingerprint())"
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        assert out.stdout.strip() == world.fingerprint()


def test_people_are_stable_when_other_groups_change(world):
    more_unknown = World(WorldConfig(n_nonexistent=40))
    assert more_unknown.people == world.people
    assert more_unknown.holdout_people == world.holdout_people
    assert more_unknown.nonexistent == world.nonexistent[:40]


def test_people_are_stable_when_sizes_change():
    # A person's facts and bios come from their own seeded stream.
    small = World(WorldConfig(n_people=50, n_holdout=5, n_nonexistent=5))
    big = World(WorldConfig(n_people=50, n_holdout=5, n_nonexistent=5, qa_per_fact=3))
    assert small.people == big.people
    assert small.bios(small.people[0]) == big.bios(big.people[0])


def test_fingerprint_is_sha256_hex(world):
    fp = world.fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0


def test_world_pickles(world):
    import pickle

    again = pickle.loads(pickle.dumps(world))
    assert again.fingerprint() == world.fingerprint()
    assert again.people == world.people
