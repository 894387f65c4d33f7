"""Writes N synthetic business-analysis documents of about 5 KB each as
COPY text rows for `documents` (tenant, id, title, content, owner,
metadata) to stdout, for scripts/bench-documents.sh --search-docs N. Words
follow a skewed distribution over a fixed vocabulary, so common terms match
many documents and rare ones few."""

import random
import sys
import uuid

DOMAIN = """requirement stakeholder customer invoice payment portal login account report dashboard
export import approval workflow order shipment warehouse inventory supplier contract budget forecast
audit compliance security encryption password role permission notification email message mobile offline
sync search filter sort page latency availability backup recovery migration integration api gateway
service database schema table record field validation error retry timeout queue batch schedule
calendar meeting interview persona journey wireframe diagram sequence component deployment release
sprint backlog story acceptance criteria scope risk assumption constraint dependency milestone
vendor license pricing discount refund tax currency region language accessibility performance
scalability monitoring logging metric alert incident support ticket escalation training onboarding
document version review comment attachment upload download archive retention privacy consent
analytics segment campaign lead opportunity pipeline revenue churn subscription plan trial""".split()


def words(n):
    rng = random.Random(n)
    syn = ["".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4)))
           for _ in range(3000)]
    return DOMAIN + syn


def main():
    tenant, n = sys.argv[1], int(sys.argv[2])
    vocab = words(7)
    rng = random.Random(11)
    k = len(vocab)
    pick = lambda: vocab[min(k - 1, int(k * rng.random() ** 3))]  # noqa: E731
    out = sys.stdout
    for i in range(n):
        title = " ".join(pick() for _ in range(rng.randint(3, 7))).capitalize()
        body = []
        size = 0
        while size < 5000:
            sentence = " ".join(pick() for _ in range(rng.randint(6, 16))).capitalize() + "."
            body.append(sentence)
            size += len(sentence) + 1
        content = " ".join(body)
        meta = '{"project": "p%d", "team": "t%d"}' % (i % 50, i % 7)
        out.write(f"{tenant}\t{uuid.uuid4()}\t{title}\t{content}\tbench\t{meta}\n")


if __name__ == "__main__":
    main()
