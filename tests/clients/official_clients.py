#!/usr/bin/env python3
"""Checks that the official `openai` and `anthropic` Python clients parse the simulator's answers.

Usage: official_clients.py BASE_URL [--key sk-test]

BASE_URL is the root of a running simulator (e.g. http://127.0.0.1:8080) that serves an
OpenAI-kind provider named `openai` with model `gpt-sim` and an Anthropic-kind provider named
`anthropic` with model `claude-sim`, both with the given API key. Exits non-zero on any failure.
Needs `pip install openai anthropic`.
"""

import argparse
import sys

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base_url")
    ap.add_argument("--key", default="sk-test")
    args = ap.parse_args()
    base = args.base_url.rstrip("/")
    failed = False
    for name, fn in [("openai", check_openai), ("anthropic", check_anthropic)]:
        try:
            fn(base, args.key)
            print(f"{name}: ok")
        except Exception as e:  # report every client's failure, then exit non-zero
            print(f"{name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
