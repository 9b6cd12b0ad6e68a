"""Checks an `offpeak results --format openai-batch` file the way evaluation tooling written for
the OpenAI Batch API reads it: every line has `id`, `custom_id`, `response` and `error`, and each
`response.body` validates as the official `openai` package's ChatCompletion.

usage: check_openai_batch.py FILE EXPECTED_LINES
"""
import json
import sys

from openai.types.chat import ChatCompletion

path, expected = sys.argv[1], int(sys.argv[2])
lines = [json.loads(l) for l in open(path) if l.strip()]
assert len(lines) == expected, f"{len(lines)} lines, expected {expected}"
ids = set()
for obj in lines:
    assert set(obj) == {"id", "custom_id", "response", "error"}, sorted(obj)
    assert obj["id"].startswith("batch_req_"), obj["id"]
    ids.add(obj["custom_id"])
    if obj["error"] is None:
        resp = obj["response"]
        assert resp["status_code"] == 200, resp
        completion = ChatCompletion.model_validate(resp["body"], strict=False)
        assert completion.choices[0].message.content, obj
        assert completion.usage.completion_tokens > 0, obj
    else:
        assert obj["response"] is None
        assert obj["error"]["message"], obj
assert len(ids) == expected, "custom_id repeated"
print(f"ok: {len(lines)} lines")
