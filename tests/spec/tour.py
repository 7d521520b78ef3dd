"""Every service called as its users would, each answer checked against the OpenAPI document
the node serves: the JSON schema of the status it answered, the content type, the documented
headers. A field the node sends that the document does not name fails here."""

import csv
import io
import json
import time

import jsonschema
import referencing
import requests
from referencing.jsonschema import DRAFT202012

DECK = """prefix,name,rate,connect_fee,mcd,pulse,grace,rate_inter,rate_intra,status
44,United Kingdom,0.02,0,60,60,0,,,Active
441,United Kingdom Landline,0.012,0,60,60,0,,,Active
447,United Kingdom Mobile,0.09,0.01,30,6,0,,,Active
1,USA,0.01,0,6,6,0,0.011,0.009,Active
"""


class Spec:
    def __init__(self, url):
        self.url = url
        self.doc = requests.get(url + "/openapi.json", timeout=10).json()
        resource = referencing.Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry = referencing.Registry().with_resource("urn:edgerate", resource)
        self.checked = {}

    def response(self, path, method, status):
        # A method the node refuses (405) is documented with the operations it takes.
        operations = self.doc["paths"][path]
        responses = operations.get(method, operations["get"])["responses"]
        assert str(status) in responses, f"{method.upper()} {path}: status {status} undocumented"
        return responses[str(status)]

    def validate(self, schema, value, what):
        wrapped = {"$ref": "urn:edgerate#" + schema["$ref"][1:]} if "$ref" in schema else schema
        validator = jsonschema.Draft202012Validator(wrapped, registry=self.registry)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            raise AssertionError(f"{what}: {errors[0].message} at {list(errors[0].path)}\n{value}")


class Tour:
    def __init__(self, node):
        self.node = node
        self.spec = Spec(node.url)
        self.auth = node.operator()

    def call(self, service, params=None, *, fmt="json", method="get", status=200, auth=None,
             body=None, content_type=None, raw=False):
        path = f"/api/{service}.{{ext}}"
        headers = dict(auth or self.auth)
        if content_type:
            headers["Content-Type"] = content_type
        r = requests.request(method.upper(), f"{self.node.url}/api/{service}.{fmt}",
                             params=params if method == "get" or body is not None else None,
                             data=body if body is not None else (params if method == "post" else None),
                             headers=headers, timeout=60)
        assert r.status_code == status, f"{service}: {r.status_code} {r.text[:300]}"
        documented = self.spec.response(path, method, r.status_code)
        media = r.headers["Content-Type"].split(";")[0].strip()
        assert media in documented["content"], f"{service}: content type {media} undocumented"
        for name, header in documented.get("headers", {}).items():
            if header.get("required"):
                assert name in r.headers, f"{service}: required header {name} missing"
        if raw:
            return r.content
        if media == "application/json":
            value = r.json()
            self.spec.validate(documented["content"][media]["schema"], value, f"{service} {r.status_code}")
            self.spec.checked[service] = self.spec.checked.get(service, 0) + 1
            return value
        return r.text

    def run(self):
        made = self.call("admin/account/create", {"name": "tour", "rps": 100000, "daily": 100000000})
        self.call("admin/account/list")
        self.call("admin/account/update", {"account": made["account"], "name": "tour account"})
        made["key"] = self.call("admin/account/key/rotate", {"account": made["account"]})["key"]
        self.auth = {"Authorization": f"Bearer {made['account']}:{made['key']}"}
        self.account = made

        self.call("ratecard/create", {"name": "retail", "currency": "EUR", "precision": 4,
                                      "notice_days": 0}, method="post")
        for name in ("carrier-a", "carrier-b"):
            self.call("ratecard/create", {"name": name, "kind": "provider", "cap": "1"})
        for card in ("retail", "carrier-a", "carrier-b"):
            self.call("ratecard/import", {"card": card}, method="post", body=DECK,
                      content_type="text/csv")
        self.call("ratecard/list")
        self.call("ratecard/get", {"card": "retail"}, fmt="xml")
        self.call("ratecard/get", {"card": "retail"}, fmt="html")
        self.call("ratecard/update", {"card": "carrier-b", "rounding": "half_up"})
        self.call("ratecard/rules", {"card": "retail", "limit": 2, "prefix": "4"})
        self.call("ratecard/rule/set", {"card": "carrier-b", "prefix": "4477", "rate": "0.05",
                                        "name": "UK Mobile Other"})
        self.call("ratecard/rule/set", {"card": "carrier-b", "prefix": "44", "rate": "0.019",
                                        "rate_inter": "0.02"})
        self.call("ratecard/rule/delete", {"card": "carrier-b", "prefix": "4477"})
        draft = self.call("ratecard/import", {"card": "retail", "live_at": "draft"},
                          method="post", body=DECK.replace("0.012", "0.015"), content_type="text/csv")
        self.call("ratecard/revisions", {"card": "retail"})
        self.call("ratecard/diff", {"card": "retail", "from": 2, "to": draft["rev"]})
        exported = self.call("ratecard/export", {"card": "retail"})
        assert next(csv.reader(io.StringIO(exported)))[0] == "prefix"
        self.call("ratecard/export", {"card": "retail", "format": "ime"})
        self.call("ratecard/query", {"card": "retail", "number": "441234567890", "duration": "61"})
        self.call("ratecard/query", {"card": "retail", "number": "441234567890,4479,999"})
        self.call("ratecard/query", {"card": "retail", "number": "12125550100", "cli": "13105550100"},
                  fmt="xml")
        self.call("ratecard/query", {"card": "retail", "number": "999"}, status=404)
        self.call("ratecard/query", {"card": "retail", "number": "44", "bogus": "1"}, status=400)
        self.call("ratecard/create", {"name": "wholesale"})
        self.call("ratecard/build", {"card": "wholesale", "from": "carrier-a,carrier-b",
                                     "mix": "min", "profit_percent": "10", "rebuild": "auto"})
        self.call("ratecard/get", {"card": "wholesale"})
        self.call("routing/lcr", {"number": "447700900123", "card": "retail"})
        self.call("routing/lcr", {"number": "447700900123,12125550100", "order": "cost",
                                  "limit": 5})

        now = int(time.time())
        cdrs = [{"callid": f"t{i}", "dt": now - 600 + i, "dest_number": "447700900123",
                 "duration": 61 + i, "sip_code": 200, "card": "retail", "provider": "carrier-a"}
                for i in range(5)] + [{"callid": "t-bad", "dest_number": "447700900999",
                                       "sip_code": 404}]
        self.call("cdr/add", method="post", body=json.dumps(cdrs), content_type="application/json")
        self.call("cdr/add", {"callid": "t-one", "dest_number": "12125550100", "sip_code": 486})
        window = {"from": now - 3600, "to": now + 60}
        self.call("cdr/list", window)
        self.call("cdr/list", {**window, "sip_code": 200, "limit": 2, "order": "asc"})
        self.call("cdr/export", window)
        self.call("cdr/stats", window)
        for group in ("prefix", "card", "sip_code", "day"):
            self.call("cdr/stats", {**window, "group_by": group})
        self.call("ratecard/simulate", {"card": "retail", **window, "revision": draft["rev"]})
        self.call("ratecard/simulate", {"card": "wholesale", **window,
                                        "providers": "carrier-a,carrier-b"})
        self.call("cdr/rerate", {"card": "retail", **window, "revision": draft["rev"]})
        self.call("ratecard/activate", {"card": "retail", "revision": draft["rev"]})
        self.call("lookup/asrplus", {"number": "447700900999"})
        self.call("lookup/asrplus", {"number": "447700900999,447700900123,15550000000"})

        self.call("admin/dataset/import", {"name": "hlr"}, method="post", auth=self.node.operator(),
                  body="prefix,mcc,mnc,operator\n4477,234,15,Vodafone UK\n", content_type="text/csv")
        self.call("admin/dataset/import", {"name": "tps"}, method="post", auth=self.node.operator(),
                  body="number\n447700900123\n", content_type="text/csv")
        self.call("lookup/smart", {"number": "447700900123,12125550100",
                                   "type": "asrplus,plan,range,lrn,hlr,tps"})
        self.call("lookup/smart", {"number": "447700900123", "type": "ping", "timeout": 5})
        self.call("lookup/ping", {"number": "447700900123", "timeout": 5})
        self.call("lookup/ping", {"number": "447700900123,447700900124", "timeout": 5})
        self.call("dial/dial", {"number": "447700900123", "cli": "441632960000", "timeout": 5})
        self.call("cluster/status", auth=self.node.operator())
        archive = self.call("admin/backup", auth=self.node.operator(), raw=True)
        assert archive[257:262] == b"ustar", "a tar archive"
        self.call("ratecard/delete", {"card": "carrier-b"})
        self.call("ratecard/get", {"card": "carrier-b"}, status=404)
        self.call("ratecard/get", {"card": "retail"}, method="put", status=405)
        self.call("ratecard/list", auth={"Authorization": "Bearer nobody:wrong"}, status=401)
        spare = self.call("admin/account/create", {"name": "spare"}, auth=self.node.operator())
        self.call("admin/account/delete", {"account": spare["account"]}, auth=self.node.operator())

        # Every service whose answer is JSON (the files, CSV and tar, are checked by their
        # content type) has had an answer validated.
        json_answers = [path.split("/api/")[1].split(".{")[0]
                        for path, ops in self.spec.doc["paths"].items()
                        if path.startswith("/api/")
                        and "application/json" in ops["get"]["responses"]["200"]["content"]]
        missing = [s for s in json_answers if s not in self.spec.checked]
        assert not missing, f"services whose JSON answer the tour never checked: {missing}"
        return sum(self.spec.checked.values())
