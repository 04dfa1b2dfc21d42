"""medsft.metrics.servers: where each server kind takes a setting, and a server's kind from its
listing."""

import pytest

from medsft.metrics.servers import UnsupportedSetting, request_fields, server_kind
from tests.helpers import SAMPLED


def test_settings_outside_the_openai_api_go_where_each_server_kind_takes_them():
    openai_fields = {"max_tokens": 64, "temperature": 0.7, "top_p": 0.8}
    thinking = {"chat_template_kwargs": {"enable_thinking": False}}
    assert request_fields("vllm", SAMPLED) == {
        **openai_fields,
        "extra_body": {"top_k": 20, "repetition_penalty": 1.1, **thinking},
    }
    assert request_fields("sglang", {**SAMPLED, "top_k": 0})["extra_body"]["top_k"] == -1
    served = request_fields("transformers", SAMPLED)
    assert served == {
        **openai_fields,
        "extra_body": {
            **thinking,
            # `transformers serve` takes generate() settings as a JSON string, and samples only
            # when told to (its model's generation config may say greedy).
            "generation_config": '{"do_sample": true, "repetition_penalty": 1.1, "top_k": 20}',
        },
    }
    # An OpenAI server takes none: the setting and the kind are named before any request...
    with pytest.raises(UnsupportedSetting, match=r"top_k = 20 .* kind 'openai'"):
        request_fields("openai", SAMPLED)
    # ...unless it asks for nothing (top_k off, no penalty, thinking off).
    off = {**SAMPLED, "top_k": 0, "repetition_penalty": 1.0}
    assert request_fields("openai", off) == openai_fields
    # extra_body goes as written: a JSON string stays a string, and replaces the derived one.
    mine = {"generation_config": '{"min_p": 0.05}', "chat_template_kwargs": {"x": 1}}
    assert request_fields("transformers", SAMPLED, mine)["extra_body"] == mine
    assert request_fields("openai", off, {"top_k": 5})["extra_body"] == {"top_k": 5}


def test_a_listing_that_names_no_server_is_no_kind():
    assert server_kind([{"id": "m", "owned_by": "vllm"}]) == "vllm"
    assert server_kind([{"id": "m", "owned_by": "library"}]) is None
