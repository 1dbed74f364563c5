#!/usr/bin/env python3
"""Sends NUL and oversized values to every operation of the served OpenAPI document: in each
path parameter, each declared query parameter and each string of the JSON body (nested objects,
arrays and string maps included). No answer may be a 5xx, and every error must be JSON in the
error shape. Deterministic and quick (a few hundred requests), so the fuzz run can afford it on
both backends. Standard library only.

Usage: fuzz_edges.py BASE_URL SESSION_TOKEN
"""

import json
import sys
import urllib.error
import urllib.parse
import urllib.request

VALUES = ["\u0000", "de\u0000fault", "x" * 3000, "\u00e9" * 300, "%00", "k\r\rm"]
SKIPPED = {("post", "/users/logout")}  # would end the session every later request uses


def schema_of(doc, schema):
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].split("/")[-1]]
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema and schema[key]:
            return schema_of(doc, schema[key][0])
    return schema


def sample(doc, schema, value, depth=0):
    """A value of `schema` with every string set to `value`."""
    schema = schema_of(doc, schema)
    kind = schema.get("type")
    if depth > 4:
        return None
    if kind == "string" and schema.get("format") not in ("uuid", "date-time"):
        return value
    if kind == "string":
        return None
    if kind == "array":
        item = sample(doc, schema.get("items", {}), value, depth + 1)
        return [] if item is None else [item]
    if kind == "object" or "properties" in schema:
        out = {}
        for name, prop in schema.get("properties", {}).items():
            v = sample(doc, prop, value, depth + 1)
            if v is not None:
                out[name] = v
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) or extra is True or not schema.get("properties"):
            out[value] = value
        return out
    return None


# Bodies that pass validation, so that one bad field at a time reaches as deep as it can.
GOOD = {
    ("post", "/organizations/{organization}/provisionerjobs"): {"type": "workspace_build"},
    ("post", "/provisionerd/acquire"): {"name": "fuzz", "wait_seconds": 0},
    ("post", "/organizations/{organization}/provisionerkeys"): {"name": "fuzz-key"},
    ("post", "/organizations"): {"name": "fuzz-org"},
    ("post", "/users"): {"email": "f@example.com", "username": "fuzzer", "password": "fuzz-pass-1"},
    ("post", "/organizations/{organization}/provisionerjobs/cancel"): {"status": ["pending"]},
}
GOOD_PATH = {"organization": "default", "job": "00000000-0000-0000-0000-000000000001",
             "user": "me", "name": "fuzz-key", "id": "1"}


def leaves(value, at=()):
    """Paths to every string (and every map key) of a sampled body."""
    if isinstance(value, str):
        yield at
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, at + (i,))
    elif isinstance(value, dict):
        for k, item in value.items():
            yield from leaves(item, at + (k,))


def with_leaf(base, sampled, path, value):
    """`base` (or the sampled body) with the string at `path` set to `value`."""
    body = json.loads(json.dumps(base if base is not None else sampled))
    node, src = body, sampled
    for step in path[:-1]:
        src = src[step]
        if isinstance(step, str) and isinstance(node, dict) and step not in node:
            node[step] = json.loads(json.dumps(src))
        node = node[step]
    node[path[-1]] = value
    return body


def fill(path, fuzzed=None, value=""):
    for name, good in GOOD_PATH.items():
        path = path.replace("{%s}" % name, value if name == fuzzed else good)
    return path


def send(base, token, method, path, query=None, body=None):
    url = base + "/api/v2" + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method.upper())
    req.add_header("Coder-Session-Token", token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def main():
    base, token = sys.argv[1], sys.argv[2]
    with urllib.request.urlopen(base + "/api/v2/openapi.json") as resp:
        doc = json.load(resp)
    failures, sent = [], 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if (method, path) in SKIPPED:
                continue
            params = op.get("parameters", [])
            content = op.get("requestBody", {}).get("content", {})
            body_schema = next((c.get("schema") for t, c in content.items() if "json" in t), None)
            good = GOOD.get((method, path))
            sampled = sample(doc, body_schema, "x") if body_schema else None
            base_body = good if good is not None else sampled
            for value in VALUES:
                quoted = urllib.parse.quote(value, safe="")
                cases = []
                for p in params:
                    if p["in"] == "path":
                        cases.append((fill(path, p["name"], quoted), None, base_body))
                    elif p["name"] != "follow":
                        cases.append((fill(path), {p["name"]: value}, base_body))
                if sampled is not None:
                    for leaf in leaves(sampled):
                        cases.append((fill(path), None, with_leaf(good, sampled, leaf, value)))
                    # A map key too (tags): a second entry whose key is the value.
                    cases.append((fill(path), None, sample(doc, body_schema, value)))
                for p, q, b in cases:
                    status, ctype, raw = send(base, token, method, p, q, b)
                    sent += 1
                    what = f"{method.upper()} {p[:80]} query={str(q)[:60]} value={value[:12]!r}"
                    if status >= 500:
                        failures.append(f"{what}: {status} {raw[:200]!r}")
                    elif status >= 400:
                        try:
                            ok = "json" in ctype and isinstance(json.loads(raw)["message"], str)
                        except (ValueError, KeyError, TypeError):
                            ok = False
                        if not ok:
                            failures.append(f"{what}: {status} not in the error shape: {raw[:200]!r}")
    print(f"fuzz_edges: {sent} requests with NUL and oversized values")
    if failures:
        print("\n".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
