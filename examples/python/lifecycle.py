#!/usr/bin/env python3
"""Walk bi-data's business-intelligence lifecycle with a generated client.

company -> opportunity (through its pipeline) -> campaign -> events (SENT,
OPENED, REPLIED) -> ListCampaignEvents -> ListDueFollowUps, checking every
answer on the way: ids, statuses, etags, time stamps, the event log's
numbering, and the error codes and google.rpc.ErrorInfo reasons of illegal
moves (BiDataError decodes them from the grpc-status-details-bin trailer).

Usage:
  lifecycle.py --addr 127.0.0.1:50051 --token "$TOKEN"

The token needs the writer role. Run it against a tenant of its own (the
follow-up check expects only this script's campaigns to be due; the Rust
test suite runs it that way, `--shared-tenant` relaxes that check so it also
runs against the demo tenant). Prints a JSON summary and exits 0 when every
check passed; prints the first mismatch and exits 1 otherwise. Needs the
bi_data_client package (README, "Python client").
"""
import argparse
import datetime as dt
import json
import os
import sys
import uuid

import grpc

try:
    from bi_data_client import BiDataError, Client, company_pb2 as c_pb, outreach_pb2 as o_pb
except ImportError:
    sys.exit("bi_data_client is not installed: scripts/build-python-client.sh DIR, then pip install DIR/*.whl")


class Mismatch(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Mismatch(what)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", default="127.0.0.1:50051")
    p.add_argument("--token", default=os.environ.get("TOKEN", ""))
    p.add_argument("--shared-tenant", action="store_true",
                   help="the tenant has other campaigns (e.g. the demo's): only look for ours among the due ones")
    args = p.parse_args()
    from google.protobuf import field_mask_pb2, timestamp_pb2

    run = uuid.uuid4().hex[:8]
    summary = {"run": run}

    def ts(t):
        out = timestamp_pb2.Timestamp()
        out.FromDatetime(t)
        return out

    def expect_error(call, code, reason, what):
        try:
            call()
        except BiDataError as err:
            check(err.code() == code, f"{what}: got {err.code()} {err.details()!r}, want {code}")
            check(err.reason == reason, f"{what}: reason {err.reason!r}, want {reason!r}")
            check(err.domain == "bi.data.v1", f"{what}: domain {err.domain!r}")
            return err
        raise Mismatch(f"{what}: succeeded, want {code} {reason}")

    with Client(args.addr, args.token) as client:
        companies = client.companies
        outreach = client.outreach

        # 1. A company, idempotent by request_id, found by a misspelled name.
        company = c_pb.Company(
            name=f"Lifecycle Widgets {run} GmbH", website="https://widgets.example", industry="Manufacturing",
            size=c_pb.COMPANY_SIZE_MEDIUM, technology_stack=["python", "sap"],
            pain_points=["manual invoice processing"],
            decision_makers=[c_pb.Contact(name="Dana Scully", title="COO", email="dana@widgets.example")],
            confidence_score=0.8)
        company.enrichment.update({"employees": 250, "funding_stage": "series_a"})
        req = c_pb.CreateCompanyRequest(company=company, request_id=f"lifecycle-{run}")
        co = companies.CreateCompany(req)
        check(uuid.UUID(co.id) is not None, "company id is a UUID")
        check(co.name == company.name and co.etag, f"company as created: {co}")
        check(co.enrichment["employees"] == 250, f"enrichment kept: {co.enrichment}")
        again = companies.CreateCompany(req)
        check(again.id == co.id, f"repeated request_id created another company: {again.id} != {co.id}")
        hits = companies.SearchCompanies(c_pb.SearchCompaniesRequest(query=f"Lifecycle Widgts {run}"))
        check(hits.companies and hits.companies[0].id == co.id,
              f"SearchCompanies did not find the company first: {[h.name for h in hits.companies]}")
        summary["company_id"] = co.id

        # 2. An opportunity through its pipeline, with an illegal move on the way.
        opp = companies.CreateOpportunity(c_pb.CreateOpportunityRequest(opportunity=c_pb.Opportunity(
            company_id=co.id, problem_description="Invoices typed in by hand",
            solution_approach="Invoice extraction with a review queue", estimated_value=45000,
            implementation_complexity=c_pb.IMPLEMENTATION_COMPLEXITY_MEDIUM, confidence_score=0.7)))
        check(opp.status == c_pb.OPPORTUNITY_STATUS_IDENTIFIED, f"new opportunity status {opp.status}")
        check(opp.company_id == co.id, "opportunity names its company")

        def move(status, **fields):
            o = c_pb.Opportunity(id=opp.id, status=status, **fields)
            paths = ["status", *fields]
            return companies.UpdateOpportunity(c_pb.UpdateOpportunityRequest(
                opportunity=o, update_mask=field_mask_pb2.FieldMask(paths=paths)))

        etags = [opp.etag]
        for status, extra in [(c_pb.OPPORTUNITY_STATUS_RESEARCHED, {}),
                              (c_pb.OPPORTUNITY_STATUS_POC_CREATED, {"proof_of_concept_created": True}),
                              (c_pb.OPPORTUNITY_STATUS_PITCHED, {})]:
            opp = move(status, **extra)
            check(opp.status == status, f"opportunity status {opp.status}, want {status}")
            check(opp.etag not in etags, f"etag {opp.etag} did not change")
            etags.append(opp.etag)
        check(opp.proof_of_concept_created, "proof_of_concept_created kept")
        err = expect_error(lambda: move(c_pb.OPPORTUNITY_STATUS_IDENTIFIED), grpc.StatusCode.FAILED_PRECONDITION,
                                 "ILLEGAL_TRANSITION", "PITCHED -> IDENTIFIED")
        check(err.metadata["from"] == "PITCHED" and err.metadata["to"] == "IDENTIFIED",
              f"ErrorInfo metadata {err.metadata}")
        check(sorted(err.metadata["allowed"].split(",")) == ["ACCEPTED", "REJECTED"],
              f"allowed next states {err.metadata['allowed']!r}")
        got = companies.GetOpportunity(c_pb.GetOpportunityRequest(id=opp.id))
        check(got.status == c_pb.OPPORTUNITY_STATUS_PITCHED and got.etag == opp.etag,
              "a refused move changed the opportunity")
        opp = move(c_pb.OPPORTUNITY_STATUS_ACCEPTED)
        check(opp.status == c_pb.OPPORTUNITY_STATUS_ACCEPTED, f"accepted: {opp.status}")
        info = expect_error(lambda: move(c_pb.OPPORTUNITY_STATUS_REJECTED), grpc.StatusCode.FAILED_PRECONDITION,
                               "ILLEGAL_TRANSITION", "ACCEPTED -> REJECTED (final state)")
        check(info.metadata["allowed"] == "", f"a final state allows {info.metadata['allowed']!r}")
        summary["opportunity_id"] = opp.id
        summary["opportunity_illegal_move"] = err.details()

        # 3. A campaign pitching it, due for a follow-up since yesterday.
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        follow_up = now - dt.timedelta(days=1)
        camp = outreach.CreateCampaign(o_pb.CreateCampaignRequest(campaign=o_pb.Campaign(
            company_id=co.id, opportunity_id=opp.id, contact_method=o_pb.CONTACT_METHOD_EMAIL,
            contact_person="Dana Scully", message_content="Hi Dana, about those invoices...",
            follow_up_time=ts(follow_up))))
        check(camp.status == o_pb.CAMPAIGN_STATUS_DRAFT, f"new campaign status {camp.status}")
        check(camp.opportunity_id == opp.id and camp.company_id == co.id, "campaign references")
        check(not camp.HasField("sent_time"), "a draft has no sent_time")
        # A draft is not open: not due, whatever its follow_up_time.
        draft = outreach.CreateCampaign(o_pb.CreateCampaignRequest(campaign=o_pb.Campaign(
            company_id=co.id, contact_method=o_pb.CONTACT_METHOD_PHONE, follow_up_time=ts(follow_up))))
        # An opportunity of another company is refused.
        other = companies.CreateCompany(c_pb.CreateCompanyRequest(company=c_pb.Company(name=f"Other {run}")))
        expect_error(lambda: outreach.CreateCampaign(o_pb.CreateCampaignRequest(campaign=o_pb.Campaign(
            company_id=other.id, opportunity_id=opp.id))),
            grpc.StatusCode.FAILED_PRECONDITION, "REFERENCE_NOT_FOUND", "campaign with another company's opportunity")
        summary["campaign_id"] = camp.id

        # 4. Events: SENT, OPENED, REPLIED, each stamping and moving status.
        t0 = now - dt.timedelta(hours=3)
        times = [t0, t0 + dt.timedelta(minutes=30), t0 + dt.timedelta(hours=1)]
        kinds = [o_pb.CAMPAIGN_EVENT_TYPE_SENT, o_pb.CAMPAIGN_EVENT_TYPE_OPENED, o_pb.CAMPAIGN_EVENT_TYPE_REPLIED]
        want = [o_pb.CAMPAIGN_STATUS_SENT, o_pb.CAMPAIGN_STATUS_OPENED, o_pb.CAMPAIGN_STATUS_REPLIED]

        def record(kind, at):
            return outreach.RecordCampaignEvent(o_pb.RecordCampaignEventRequest(
                id=camp.id, event=kind, event_time=ts(at)))

        for kind, at, status in zip(kinds, times, want):
            camp = record(kind, at)
            check(camp.status == status, f"after {o_pb.CampaignEventType.Name(kind)}: status {camp.status}")
        check(camp.sent_time.ToDatetime(dt.timezone.utc) == times[0], f"sent_time {camp.sent_time}")
        check(camp.response_time.ToDatetime(dt.timezone.utc) == times[2], f"response_time {camp.response_time}")
        same = record(kinds[2], times[2])
        check(same.etag == camp.etag and same.status == camp.status, "a repeated identical event changed the campaign")
        expect_error(lambda: record(o_pb.CAMPAIGN_EVENT_TYPE_REJECTED, t0), grpc.StatusCode.FAILED_PRECONDITION,
                     "OUT_OF_ORDER_EVENT", "an event older than the last one")
        expect_error(lambda: record(o_pb.CAMPAIGN_EVENT_TYPE_SENT, now), grpc.StatusCode.FAILED_PRECONDITION,
                     "ILLEGAL_TRANSITION", "REPLIED -> SENT")

        # 5. The event log: every accepted event once, numbered 1..n.
        log = outreach.ListCampaignEvents(o_pb.ListCampaignEventsRequest(campaign_id=camp.id))
        check([e.seq for e in log.events] == [1, 2, 3], f"event seqs {[e.seq for e in log.events]}")
        check([e.event for e in log.events] == kinds, f"events {[e.event for e in log.events]}")
        check([e.event_time.ToDatetime(dt.timezone.utc) for e in log.events] == times, "event times")
        check(all(e.campaign_id == camp.id and e.id for e in log.events), "events name their campaign")
        check(not log.next_page_token, "one page of events")

        # 6. Due follow-ups: the open campaign, not the draft; none before yesterday.
        due = outreach.ListDueFollowUps(o_pb.ListDueFollowUpsRequest(before=ts(now), page_size=1000))
        ids = [c.id for c in due.campaigns]
        check(camp.id in ids, f"the replied campaign is not due: {ids}")
        check(draft.id not in ids, "a draft is listed as due")
        if not args.shared_tenant:
            check(ids == [camp.id], f"due follow-ups {ids}, want only {camp.id}")
        stamps = [c.follow_up_time.ToDatetime(dt.timezone.utc) for c in due.campaigns]
        check(stamps == sorted(stamps), "due follow-ups are not oldest first")
        check(all(c.follow_up_time.ToDatetime(dt.timezone.utc) <= now for c in due.campaigns), "a future follow-up")
        earlier = outreach.ListDueFollowUps(o_pb.ListDueFollowUpsRequest(
            before=ts(follow_up - dt.timedelta(seconds=1)), page_size=1000))
        check(camp.id not in [c.id for c in earlier.campaigns], "due before its follow_up_time")
        summary["events"] = len(log.events)
        summary["due_follow_ups"] = len(ids)
        summary["campaign_status"] = o_pb.CampaignStatus.Name(camp.status)
    print(json.dumps(summary, indent=2))
    print("lifecycle ok")


if __name__ == "__main__":
    try:
        main()
    except Mismatch as m:
        print(f"lifecycle FAILED: {str(m)[:2000]}", file=sys.stderr)
        sys.exit(1)
    except grpc.RpcError as err:
        print(f"lifecycle FAILED: unexpected {err.code()}: {err.details()}", file=sys.stderr)
        sys.exit(1)
