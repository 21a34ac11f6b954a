"""`scale.torch_threads`: the unsharded stages' torch thread count is a setting (issue 16: on a small CPU
shared with other work one thread sampled SmolLM2 ~9x faster than two); shards keep their pinned count."""

from __future__ import annotations

import torch

from experiments.config import load_config
from tasks.shards import stage_threads


def test_stages_use_the_configured_thread_count_and_give_the_old_one_back():
    before = torch.get_num_threads()
    with stage_threads(load_config("demo", ["scale.torch_threads=1"]).scale):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with stage_threads(load_config("demo").scale):  # unset: torch's own default, untouched
        assert torch.get_num_threads() == before
    with stage_threads(load_config("demo", ["scale.threads_per_shard=3", "scale.torch_threads=1"]).scale, shard=0):
        assert torch.get_num_threads() == 3  # a shard's count is pinned, whatever the stages use
    assert torch.get_num_threads() == before


def test_the_thread_count_is_part_of_what_a_config_computes():
    assert load_config("demo", ["scale.torch_threads=1"]).config_hash() != load_config("demo").config_hash()
