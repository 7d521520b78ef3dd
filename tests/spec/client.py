"""A Python client generated from the node's OpenAPI document with openapi-python-client, used
as a customer would: a deck imported, a rate asked, CDRs logged and read back."""

import importlib
import io
import json
import pathlib
import subprocess
import sys
import time

import requests


def generate(url, out, venv_bin):
    spec = out / "openapi.json"
    spec.write_text(requests.get(url + "/openapi.json", timeout=10).text)
    config = out / "generator.yaml"
    # The raw uploads (text/csv) and the backup (application/x-tar) are bytes to the client.
    config.write_text("post_hooks: []\ncontent_type_overrides:\n"
                      "  text/csv: application/octet-stream\n"
                      "  application/x-tar: application/octet-stream\n")
    done = subprocess.run(
        [str(venv_bin / "openapi-python-client"), "generate", "--path", str(spec),
         "--output-path", str(out / "client"), "--overwrite", "--config", str(config),
         "--fail-on-warning"],
        capture_output=True, text=True)
    text = done.stdout + done.stderr
    if done.returncode != 0:
        raise AssertionError("openapi-python-client could not generate the whole client:\n"
                             + text[-6000:])
    sys.path.insert(0, str(out / "client"))
    return importlib.import_module("edgerate_client")


def round_trip(sdk, url, operator_key):
    api = lambda name: importlib.import_module(f"edgerate_client.api.{name}")
    models = importlib.import_module("edgerate_client.models")
    types = importlib.import_module("edgerate_client.types")
    operator = sdk.AuthenticatedClient(base_url=url, token=operator_key)
    account = api("admin.get_admin_account_create").sync(
        models.GetAdminAccountCreateExt.JSON, client=operator, name="sdk")
    assert isinstance(account, models.AccountCreated), account
    client = sdk.AuthenticatedClient(base_url=url, token=f"{account.account}:{account.key}")

    card = api("ratecard.post_ratecard_create").sync(
        models.PostRatecardCreateExt.JSON, client=client,
        body=models.PostRatecardCreateDataBody(name="sdk-card", currency="GBP"))
    assert isinstance(card, models.Card) and card.currency == "GBP", card
    deck = "prefix,name,rate,connect_fee,mcd,pulse\n44,UK,0.02,0,60,60\n447,UK Mobile,0.08,0,30,6\n"
    imported = api("ratecard.post_ratecard_import").sync(
        models.PostRatecardImportExt.JSON, client=client, card="sdk-card",
        body=types.File(payload=io.BytesIO(deck.encode()), file_name="deck.csv"))
    assert isinstance(imported, models.Import) and imported.rules == 2, imported
    # The same deck as a form variable: a second revision.
    again = api("ratecard.post_ratecard_import").sync(
        models.PostRatecardImportExt.JSON, client=client,
        body=models.PostRatecardImportDataBody(card="sdk-card", file=deck))
    assert isinstance(again, models.Import) and again.rev == imported.rev + 1, again

    priced = api("ratecard.get_ratecard_query").sync(
        models.GetRatecardQueryExt.JSON, client=client, card="sdk-card",
        number=["447700900123"], duration="61")
    assert isinstance(priced, models.Priced), priced
    assert (priced.prefix, priced.billed_duration, priced.cost) == ("447", 66, 0.088), priced.to_dict()

    now = int(time.time())
    # One CDR per request, in the query string: the generated POST cannot be called at all (for
    # the JSON batch body it writes isinstance(body, list[CdrIn]), which Python refuses).
    for cdr in (dict(callid="sdk-1", dt=str(now), dest_number="447700900123", duration="61",
                     sip_code=200, card="sdk-card"),
                dict(callid="sdk-2", dt=str(now), dest_number="447700900124", sip_code=486)):
        added = api("cdr.get_cdr_add").sync(models.GetCdrAddExt.JSON, client=client, **cdr)
        assert isinstance(added, models.CdrAdded) and added.added == 1, added
    listed = api("cdr.get_cdr_list").sync(
        models.GetCdrListExt.JSON, client=client, from_=str(now - 60), to=str(now + 60))
    assert isinstance(listed, models.Cdrs) and listed.total == 2, listed
    cdr = next(c for c in listed.cdrs if c.callid == "sdk-1")
    assert (cdr.callid, cdr.dest_code, cdr.cost) == ("sdk-1", "447", 0.088), cdr.to_dict()

    refused = api("ratecard.get_ratecard_get").sync(
        models.GetRatecardGetExt.JSON, client=client, card="no-such-card")
    assert isinstance(refused, models.Error) and refused.error.code == 404, refused
    backup = api("admin.get_admin_backup").sync_detailed(
        models.GetAdminBackupExt.JSON, client=operator)
    assert backup.status_code == 200 and backup.content[257:262] == b"ustar", backup.status_code
    return 7
