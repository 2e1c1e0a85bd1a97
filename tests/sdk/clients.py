"""The official `anthropic` and `openai` SDKs against a Switchyard node, every route given.

    python clients.py BASE_URL TOKEN ROUTE [ROUTE …]

For each route (a `model` string): Anthropic Messages (whole, streamed with the SDK's stream
helper, with a tool), `count_tokens`; OpenAI Chat (whole, streamed, with a tool); OpenAI
Responses (whole, streamed with the SDK's stream helper, with a tool). Then the Anthropic
routes' errors as the SDK raises them. Prints one line per check; exits non-zero at the first
failure. The upstream is the suite's mock: it answers TEXT, or a call of the first tool with
ARGS.
"""

import json
import sys

import anthropic
import openai

TEXT = "Hello from the upstream, in words."
ARGS = {"city": "Paris"}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def check(cond, what):
    if not cond:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)
    print(f"ok   {what}", flush=True)


def messages(claude, route):
    m = claude.messages.create(model=route, max_tokens=256, system="Be brief.",
                               messages=[{"role": "user", "content": "Hi"}])
    check(m.type == "message" and m.content[0].type == "text" and m.content[0].text == TEXT,
          f"{route} messages whole: {m.content}")
    check(m.stop_reason == "end_turn" and m.usage.input_tokens >= 0 and m.usage.output_tokens == 7,
          f"{route} messages usage and stop: {m.stop_reason} {m.usage}")
    tools = [{"name": "get_weather", "description": "Weather of a city.", "input_schema": SCHEMA}]
    with claude.messages.stream(model=route, max_tokens=256, tools=tools,
                                messages=[{"role": "user", "content": "Weather in Paris?"}]) as s:
        final = s.get_final_message()
    use = [b for b in final.content if b.type == "tool_use"]
    check(len(use) == 1 and use[0].name == "get_weather" and use[0].input == ARGS,
          f"{route} messages stream with a tool: {final.content}")
    check(final.stop_reason == "tool_use", f"{route} messages stream stop: {final.stop_reason}")
    # The history continues with the tool's result.
    follow = claude.messages.create(model=route, max_tokens=64, tools=tools, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": use[0].id, "name": "get_weather", "input": ARGS}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use[0].id, "content": "Sunny"}]},
    ])
    check(follow.type == "message", f"{route} messages tool result turn")
    with claude.messages.stream(model=route, max_tokens=64, messages=[{"role": "user", "content": "Hi"}]) as s:
        text = "".join(s.text_stream)
    check(text == TEXT, f"{route} messages text stream: {text!r}")
    n = claude.messages.count_tokens(model=route, messages=[{"role": "user", "content": "Hello there"}])
    check(n.input_tokens > 0, f"{route} count_tokens: {n.input_tokens}")


def chat(oai, route):
    c = oai.chat.completions.create(model=route, messages=[{"role": "user", "content": "Hi"}])
    check(c.choices[0].message.content == TEXT, f"{route} chat whole: {c.choices[0].message}")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}]
    stream = oai.chat.completions.create(model=route, stream=True, tools=tools,
                                         stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "Weather?"}])
    name, args, usage = None, "", None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                name = call.function.name or name
                args += call.function.arguments or ""
    check(name == "get_weather" and json.loads(args) == ARGS, f"{route} chat stream with a tool: {name} {args}")
    check(usage is not None and usage.completion_tokens == 7, f"{route} chat stream usage: {usage}")


def responses(oai, route):
    r = oai.responses.create(model=route, instructions="Be brief.", input="Hi")
    check(r.output_text == TEXT and r.status == "completed", f"{route} responses whole: {r.output}")
    tools = [{"type": "function", "name": "get_weather", "parameters": SCHEMA}]
    with oai.responses.stream(model=route, input="Weather in Paris?", tools=tools) as s:
        final = s.get_final_response()
    calls = [o for o in final.output if o.type == "function_call"]
    check(len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == ARGS,
          f"{route} responses stream with a tool: {final.output}")
    check(final.usage is not None and final.usage.output_tokens == 7, f"{route} responses usage: {final.usage}")
    follow = oai.responses.create(model=route, tools=tools, input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny"},
    ])
    check(follow.status == "completed", f"{route} responses tool output turn")
    with oai.responses.stream(model=route, input="Hi") as s:
        text = "".join(e.delta for e in s if e.type == "response.output_text.delta")
    check(text == TEXT, f"{route} responses text stream: {text!r}")


def error_of(e):
    """The error object of an SDK's status error, whichever part of the body it kept."""
    body = e.body if isinstance(e.body, dict) else {}
    return body.get("error", body)


def errors(base, token, route):
    bad = anthropic.Anthropic(base_url=base, api_key="sy-not-a-token", max_retries=0)
    try:
        bad.messages.create(model=route, max_tokens=5, messages=[{"role": "user", "content": "x"}])
        check(False, "a bad key is refused")
    except anthropic.AuthenticationError as e:
        check(e.status_code == 401 and error_of(e)["type"] == "authentication_error",
              f"401 in Anthropic's shape: {e.body}")
    claude = anthropic.Anthropic(base_url=base, api_key=token, max_retries=0)
    try:
        claude.messages.create(model="provider/nope/x", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        check(False, "an unknown model is refused")
    except anthropic.NotFoundError as e:
        check(error_of(e)["type"] == "not_found_error", f"404 in Anthropic's shape: {e.body}")
    try:
        claude.messages.create(model=route, max_tokens=5, messages=[{"role": "wizard", "content": "x"}])
        check(False, "a bad role is refused")
    except anthropic.BadRequestError as e:
        check(error_of(e)["type"] == "invalid_request_error" and "messages[0].role" in error_of(e)["message"],
              f"400 in Anthropic's shape: {e.body}")
    oai = openai.OpenAI(base_url=base + "/v1", api_key=token, max_retries=0)
    try:
        oai.responses.create(model=route, input="x", previous_response_id="resp_1")
        check(False, "previous_response_id is refused")
    except openai.BadRequestError as e:
        check(error_of(e)["param"] == "previous_response_id", f"400 in OpenAI's shape: {e.body}")


def main():
    base, token, routes = sys.argv[1], sys.argv[2], sys.argv[3:]
    claude = anthropic.Anthropic(base_url=base, api_key=token, max_retries=0)
    oai = openai.OpenAI(base_url=base + "/v1", api_key=token, max_retries=0)
    for route in routes:
        messages(claude, route)
        chat(oai, route)
        responses(oai, route)
    errors(base, token, routes[0])
    print("all passed", flush=True)


if __name__ == "__main__":
    main()
