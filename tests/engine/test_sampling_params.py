"""SamplingParams: defaults match vLLM's, bad values fail with the field's name and range."""

import dataclasses

import pytest

from rocmforge.sampling_params import SamplingParams


def test_defaults_are_vllms():
    sp = SamplingParams()
    assert (sp.n, sp.temperature, sp.top_p, sp.top_k, sp.min_p) == (1, 1.0, 1.0, 0, 0.0)
    assert (sp.repetition_penalty, sp.frequency_penalty, sp.presence_penalty) == (1.0, 0.0, 0.0)
    assert (sp.max_tokens, sp.min_tokens, sp.seed) == (16, 0, None)
    assert (sp.logprobs, sp.prompt_logprobs) == (None, None)
    assert sp.skip_special_tokens and not sp.ignore_eos and not sp.include_stop_str_in_output
    assert sp.stop_strings == () and sp.stop_ids == () and not sp.greedy


def test_normalization():
    assert SamplingParams(stop="###").stop_strings == ("###",)
    assert SamplingParams(stop=["a", "bc"]).stop_strings == ("a", "bc")
    assert SamplingParams(stop_token_ids=[3, 5]).stop_ids == (3, 5)
    assert SamplingParams(top_k=-1).top_k == 0
    assert SamplingParams(temperature=0).greedy
    assert isinstance(SamplingParams(temperature=1).temperature, float)


def test_frozen_and_replace_revalidates():
    sp = SamplingParams(stop="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sp.n = 2
    assert dataclasses.replace(sp, n=3).stop_strings == ("x",)
    with pytest.raises(ValueError, match="top_p"):
        dataclasses.replace(sp, top_p=0.0)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n": 0}, "n"),
        ({"n": 1.5}, "n"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"presence_penalty": -2.5}, "presence_penalty"),
        ({"seed": 1.0}, "seed"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"min_tokens": 5, "max_tokens": 4}, "min_tokens"),
        ({"logprobs": -1}, "logprobs"),
        ({"prompt_logprobs": "3"}, "prompt_logprobs"),
        ({"stop": 5}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"ignore_eos": 1}, "ignore_eos"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"SamplingParams\.{field}"):
        SamplingParams(**kwargs)


def test_check_vocab():
    SamplingParams(stop_token_ids=[9]).check_vocab(10)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        SamplingParams(stop_token_ids=[10]).check_vocab(10)
