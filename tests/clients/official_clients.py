#!/usr/bin/env python3
"""Checks that the official `openai` and `anthropic` Python clients parse the simulator's answers.

Usage: official_clients.py BASE_URL [--key sk-test] [--check NAME ...]

BASE_URL is the root of a running simulator (e.g. http://127.0.0.1:8080) that serves an
OpenAI-kind provider named `openai` with model `gpt-sim` and an Anthropic-kind provider named
`anthropic` with model `claude-sim`, both with the given API key. Exits non-zero on any failure.
Without --check it runs the `openai` and `anthropic` checks (plain completions and errors); the
other checks (streaming, tools, n, JSON mode, batches, flex) are named with --check. The batch
checks need both providers to offer a batch API with a turnaround of a few seconds; the flex check
needs the OpenAI provider to offer flex with a concurrency of 1 and a flex latency of about half a
second. Needs `pip install openai anthropic`.
"""

import argparse
import json
import sys
import threading
import time

import anthropic
import openai


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_openai(base, key):
    client = openai.OpenAI(base_url=f"{base}/openai/v1", api_key=key, max_retries=0)
    models = [m.id for m in client.models.list()]
    check("gpt-sim" in models, f"models.list: {models}")

    r = client.chat.completions.create(
        model="gpt-sim",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say something."},
        ],
    )
    check(r.id.startswith("chatcmpl-"), f"id {r.id}")
    check(r.object == "chat.completion", f"object {r.object}")
    choice = r.choices[0]
    check(choice.message.role == "assistant", "role")
    check(bool(choice.message.content), "empty content")
    check(choice.finish_reason == "stop", f"finish_reason {choice.finish_reason}")
    check(r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, f"usage {r.usage}")
    check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, "total")

    short = client.chat.completions.create(
        model="gpt-sim", max_tokens=3, messages=[{"role": "user", "content": "Go on."}]
    )
    check(short.choices[0].finish_reason == "length", "finish_reason length")
    check(short.usage.completion_tokens == 3, f"capped usage {short.usage}")

    try:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
        check(False, "unknown model accepted")
    except openai.NotFoundError as e:
        check(e.status_code == 404 and e.code == "model_not_found", f"404: {e}")

    bad_key = openai.OpenAI(base_url=f"{base}/openai/v1", api_key="wrong", max_retries=0)
    try:
        bad_key.chat.completions.create(model="gpt-sim", messages=[{"role": "user", "content": "x"}])
        check(False, "wrong key accepted")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, f"401: {e}")


def check_anthropic(base, key):
    client = anthropic.Anthropic(base_url=f"{base}/anthropic", api_key=key, max_retries=0)
    r = client.messages.create(
        model="claude-sim",
        max_tokens=1024,
        system="You are terse.",
        messages=[{"role": "user", "content": "Say something."}],
    )
    check(r.id.startswith("msg_"), f"id {r.id}")
    check(r.type == "message" and r.role == "assistant", "type/role")
    check(r.content[0].type == "text" and bool(r.content[0].text), "text block")
    check(r.stop_reason == "end_turn", f"stop_reason {r.stop_reason}")
    check(r.usage.input_tokens > 0 and r.usage.output_tokens > 0, f"usage {r.usage}")

    short = client.messages.create(
        model="claude-sim", max_tokens=2, messages=[{"role": "user", "content": "Go on."}]
    )
    check(short.stop_reason == "max_tokens", f"stop_reason {short.stop_reason}")
    check(short.usage.output_tokens == 2, f"capped usage {short.usage}")

    try:
        client.messages.create(
            model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
        check(False, "unknown model accepted")
    except anthropic.NotFoundError as e:
        check(e.status_code == 404, f"404: {e}")

    bad_key = anthropic.Anthropic(base_url=f"{base}/anthropic", api_key="wrong", max_retries=0)
    try:
        bad_key.messages.create(
            model="claude-sim", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
        check(False, "wrong key accepted")
    except anthropic.AuthenticationError as e:
        check(e.status_code == 401, f"401: {e}")


def openai_client(base, key):
    return openai.OpenAI(base_url=f"{base}/openai/v1", api_key=key, max_retries=0)


def anthropic_client(base, key):
    return anthropic.Anthropic(base_url=f"{base}/anthropic", api_key=key, max_retries=0)


WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}


def check_openai_stream(base, key):
    client = openai_client(base, key)
    messages = [{"role": "user", "content": "Stream something."}]
    plain = client.chat.completions.create(model="gpt-sim", messages=messages)
    chunks = list(
        client.chat.completions.create(
            model="gpt-sim",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(text == plain.choices[0].message.content, f"streamed {text!r}")
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check(finish == ["stop"], f"finish reasons {finish}")
    last = chunks[-1]
    check(last.choices == [] and last.usage is not None, f"last chunk {last}")
    check(last.usage.completion_tokens == plain.usage.completion_tokens, f"usage {last.usage}")
    check(all(c.usage is None for c in chunks[:-1]), "usage before the last chunk")


def check_anthropic_stream(base, key):
    client = anthropic_client(base, key)
    kwargs = dict(
        model="claude-sim", max_tokens=1024, messages=[{"role": "user", "content": "Stream."}]
    )
    plain = client.messages.create(**kwargs)
    with client.messages.stream(**kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    check(text == plain.content[0].text, f"streamed {text!r}")
    check(final.content[0].text == text, "final message text")
    check(final.stop_reason == "end_turn", f"stop_reason {final.stop_reason}")
    check(final.usage.output_tokens == plain.usage.output_tokens, f"usage {final.usage}")
    check(final.usage.input_tokens == plain.usage.input_tokens, f"usage {final.usage}")


def check_openai_tools(base, key):
    client = openai_client(base, key)
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
    r = client.chat.completions.create(
        model="gpt-sim",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[tool],
    )
    choice = r.choices[0]
    check(choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason}")
    check(choice.message.content is None, "content beside the tool call")
    call = choice.message.tool_calls[0]
    check(call.type == "function" and call.function.name == "get_weather", f"call {call}")
    args = json.loads(call.function.arguments)
    check(isinstance(args["city"], str) and isinstance(args["days"], int), f"arguments {args}")

    a = anthropic_client(base, key).messages.create(
        model="claude-sim",
        max_tokens=1024,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[{"name": "get_weather", "input_schema": WEATHER}],
    )
    check(a.stop_reason == "tool_use", f"stop_reason {a.stop_reason}")
    block = a.content[0]
    check(block.type == "tool_use" and block.name == "get_weather", f"block {block}")
    check(isinstance(block.input["city"], str), f"input {block.input}")


def check_openai_n(base, key):
    r = openai_client(base, key).chat.completions.create(
        model="gpt-sim", n=3, messages=[{"role": "user", "content": "Three answers."}]
    )
    check([c.index for c in r.choices] == [0, 1, 2], f"choices {r.choices}")
    words = sum(len(c.message.content.split(" ")) for c in r.choices)
    check(r.usage.completion_tokens == words, f"usage {r.usage} for {words} words")


def check_openai_json(base, key):
    client = openai_client(base, key)
    r = client.chat.completions.create(
        model="gpt-sim",
        response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Answer in JSON."}],
    )
    check(isinstance(json.loads(r.choices[0].message.content), dict), "json_object content")
    schema = {
        "type": "json_schema",
        "json_schema": {"name": "weather", "strict": True, "schema": WEATHER},
    }
    r = client.chat.completions.create(
        model="gpt-sim", response_format=schema, messages=[{"role": "user", "content": "Weather?"}]
    )
    v = json.loads(r.choices[0].message.content)
    check(isinstance(v["city"], str) and isinstance(v["days"], int), f"json_schema content {v}")


def wait_until(fetch, done, what, timeout=20.0):
    """Polls `fetch()` until `done` holds of its answer; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = fetch()
        if done(v):
            return v
        check(time.monotonic() < deadline, f"{what}: still {v}")
        time.sleep(0.1)


def batch_line(custom_id, prompt):
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-sim", "messages": [{"role": "user", "content": prompt}]},
    }


def openai_batch_of(client, prompts, metadata):
    data = "".join(json.dumps(batch_line(f"r{i}", p)) + "\n" for i, p in enumerate(prompts))
    f = client.files.create(file=("in.jsonl", data.encode()), purpose="batch")
    check(f.id.startswith("file-") and f.purpose == "batch", f"file {f}")
    check(client.files.retrieve(f.id).bytes == len(data.encode()), "file bytes")
    b = client.batches.create(
        input_file_id=f.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=metadata,
    )
    check(b.id.startswith("batch_") and b.input_file_id == f.id, f"batch {b}")
    check(b.metadata == metadata, f"metadata {b.metadata}")
    return b


def check_openai_batch(base, key):
    client = openai_client(base, key)
    prompts = [f"Batch question {i}." for i in range(3)]
    b = openai_batch_of(client, prompts, {"run": "sdk", "part": "1"})
    done = wait_until(
        lambda: client.batches.retrieve(b.id), lambda x: x.status == "completed", "batch"
    )
    rc = done.request_counts
    check((rc.total, rc.completed, rc.failed) == (3, 3, 0), f"request_counts {rc}")
    check(done.completed_at and done.in_progress_at and done.error_file_id is None, f"{done}")
    out = [json.loads(l) for l in client.files.content(done.output_file_id).text.splitlines()]
    check(sorted(o["custom_id"] for o in out) == ["r0", "r1", "r2"], f"custom ids {out}")
    for o in out:
        i = int(o["custom_id"][1:])
        check(o["response"]["status_code"] == 200 and o["error"] is None, f"line {o}")
        realtime = client.chat.completions.create(
            model="gpt-sim", messages=[{"role": "user", "content": prompts[i]}]
        )
        got = o["response"]["body"]["choices"][0]["message"]["content"]
        check(got == realtime.choices[0].message.content, f"line {i} differs from realtime")

    second = openai_batch_of(client, ["Cancel me."] * 5, {"run": "sdk", "part": "2"})
    c = client.batches.cancel(second.id)
    check(c.status in ("cancelling", "cancelled") and c.cancelling_at, f"cancel {c}")
    gone = wait_until(
        lambda: client.batches.retrieve(second.id), lambda x: x.status == "cancelled", "cancel"
    )
    check(gone.cancelled_at is not None, f"cancelled {gone}")

    page = client.batches.list(limit=1)
    check(len(page.data) == 1 and page.data[0].id == second.id, f"newest first {page.data}")
    check(page.has_more, "has_more on the first page")
    every = [x.id for x in client.batches.list(limit=1)]  # follows the `after` cursor
    check(every == [second.id, b.id], f"all pages {every}")
    check(client.files.delete(done.output_file_id).deleted, "file delete")
    try:
        client.files.retrieve(done.output_file_id)
        check(False, "deleted file still there")
    except openai.NotFoundError:
        pass


def check_anthropic_batch(base, key):
    client = anthropic_client(base, key)

    def requests(prompts):
        return [
            {
                "custom_id": f"r{i}",
                "params": {
                    "model": "claude-sim",
                    "max_tokens": 256,
                    "messages": [{"role": "user", "content": p}],
                },
            }
            for i, p in enumerate(prompts)
        ]

    prompts = [f"Batch question {i}." for i in range(4)]
    b = client.messages.batches.create(requests=requests(prompts))
    check(b.id.startswith("msgbatch_") and b.type == "message_batch", f"batch {b}")
    check(b.processing_status == "in_progress" and b.request_counts.processing == 4, f"{b}")
    done = wait_until(
        lambda: client.messages.batches.retrieve(b.id),
        lambda x: x.processing_status == "ended",
        "batch",
    )
    check(done.request_counts.succeeded == 4 and done.ended_at is not None, f"{done}")
    results = list(client.messages.batches.results(b.id))
    check(sorted(r.custom_id for r in results) == ["r0", "r1", "r2", "r3"], f"{results}")
    for r in results:
        check(r.result.type == "succeeded", f"result {r}")
        realtime = client.messages.create(
            model="claude-sim",
            max_tokens=256,
            messages=[{"role": "user", "content": prompts[int(r.custom_id[1:])]}],
        )
        check(r.result.message.content[0].text == realtime.content[0].text, f"{r.custom_id}")

    second = client.messages.batches.create(requests=requests(["Cancel me."] * 3))
    c = client.messages.batches.cancel(second.id)
    check(c.processing_status == "canceling" and c.cancel_initiated_at, f"cancel {c}")
    ended = wait_until(
        lambda: client.messages.batches.retrieve(second.id),
        lambda x: x.processing_status == "ended",
        "cancel",
    )
    check(ended.request_counts.canceled + ended.request_counts.succeeded == 3, f"{ended}")
    kinds = {r.result.type for r in client.messages.batches.results(second.id)}
    check(kinds <= {"canceled", "succeeded"} and "canceled" in kinds, f"kinds {kinds}")

    page = client.messages.batches.list(limit=1)
    check(len(page.data) == 1 and page.data[0].id == second.id, f"newest first {page.data}")
    every = [x.id for x in client.messages.batches.list(limit=1)]  # follows `after_id`
    check(every == [second.id, b.id], f"all pages {every}")


def check_openai_flex(base, key):
    client = openai_client(base, key)
    messages = [{"role": "user", "content": "Flex please."}]
    r = client.chat.completions.create(model="gpt-sim", messages=messages, service_tier="flex")
    check(r.service_tier == "flex", f"service_tier {r.service_tier}")
    plain = client.chat.completions.create(model="gpt-sim", messages=messages)
    check(plain.service_tier == "default", f"default tier {plain.service_tier}")
    check(r.choices[0].message.content == plain.choices[0].message.content, "flex text")

    # With one flex slot and slow flex answers, a second request at once finds no capacity.
    answers = []
    holder = threading.Thread(
        target=lambda: answers.append(
            client.chat.completions.create(
                model="gpt-sim", messages=messages, service_tier="flex"
            )
        )
    )
    holder.start()
    time.sleep(0.15)
    try:
        client.chat.completions.create(model="gpt-sim", messages=messages, service_tier="flex")
        check(False, "second flex request found capacity")
    except openai.RateLimitError as e:
        check(e.status_code == 429 and e.code == "resource_unavailable", f"429: {e}")
        check("Resource Unavailable" in str(e), f"wording: {e}")
    holder.join()
    check(len(answers) == 1 and answers[0].service_tier == "flex", f"held answer {answers}")
    again = client.chat.completions.create(model="gpt-sim", messages=messages, service_tier="flex")
    check(again.service_tier == "flex", "flex answers once the slot is free")


CHECKS = {
    "openai": check_openai,
    "anthropic": check_anthropic,
    "openai_stream": check_openai_stream,
    "anthropic_stream": check_anthropic_stream,
    "openai_tools": check_openai_tools,
    "openai_n": check_openai_n,
    "openai_json": check_openai_json,
    "openai_batch": check_openai_batch,
    "anthropic_batch": check_anthropic_batch,
    "openai_flex": check_openai_flex,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base_url")
    ap.add_argument("--key", default="sk-test")
    ap.add_argument("--check", action="append", choices=sorted(CHECKS))
    args = ap.parse_args()
    base = args.base_url.rstrip("/")
    failed = False
    for name in args.check or ["openai", "anthropic"]:
        try:
            CHECKS[name](base, args.key)
            print(f"{name}: ok")
        except Exception as e:  # report every client's failure, then exit non-zero
            print(f"{name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
