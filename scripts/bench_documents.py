"""Document content benchmark: one 64 MiB upload and download through the
real server (MiB/s, the server's RSS sampled every 5 ms and its peak), and
GetDocument BASIC vs FULL latency on a document with 1 MiB of inline text.
Run by scripts/bench-documents.sh, which starts the server."""

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time


def stubs():
    import grpc_tools
    from grpc_tools import protoc

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")
    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    out = tempfile.mkdtemp(prefix="bi_docs_bench_")
    rc = protoc.main(["", f"-I{root}", f"-I{wkt}", f"--python_out={out}", f"--grpc_python_out={out}",
                      "bi/data/v1/document.proto"])
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    sys.path.insert(0, out)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bi.data.v1 import document_pb2, document_pb2_grpc  # noqa: E402
    return out, document_pb2, document_pb2_grpc


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.005)


def main():
    import grpc

    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--gets", type=int, default=300)
    p.add_argument("--search", action="store_true", help="the tenant holds generated documents: time searches")
    p.add_argument("--append-seconds", type=float, default=10)
    p.add_argument("--conversations", type=int, default=32)
    a = p.parse_args()
    out, pb, rpc = stubs()
    md = [("authorization", f"Bearer {a.token}")]
    opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(a.addr, options=opts) as ch:
        docs = rpc.DocumentServiceStub(ch)
        d = docs.CreateDocument(pb.CreateDocumentRequest(document=pb.Document(title="bench")), metadata=md)
        size = a.mib << 20
        block = os.urandom(1 << 20)
        content = [block[i:] + block[:i] for i in range(a.mib)]  # 64 distinct 1 MiB pieces
        sha = hashlib.sha256(b"".join(content)).hexdigest()

        def msgs():
            yield pb.UploadDocumentContentRequest(header=pb.UploadHeader(document_id=d.id, sha256=sha))
            for c in content:
                yield pb.UploadDocumentContentRequest(data=c)

        idle = rss_kib(a.pid)
        s = Sampler(a.pid)
        s.start()
        t0 = time.perf_counter()
        up = docs.UploadDocumentContent(msgs(), metadata=md, timeout=300)
        t_up = time.perf_counter() - t0
        up_peak = s.peak
        assert up.size_bytes == size and up.sha256 == sha, up
        time.sleep(0.5)
        after_up = rss_kib(a.pid)

        def down():
            s.peak = 0
            h = hashlib.sha256()
            n = 0
            t0 = time.perf_counter()
            for m in docs.DownloadDocumentContent(pb.DownloadDocumentContentRequest(document_id=d.id), metadata=md,
                                                  timeout=300):
                h.update(m.data)
                n += len(m.data)
            assert n == size and h.hexdigest() == sha
            return time.perf_counter() - t0, s.peak

        t_down, down_peak = down()
        t_down2, down_peak2 = down()
        s.stop = True
        print(f"upload   {a.mib} MiB: {a.mib / t_up:7.1f} MiB/s ({t_up:.2f} s), server RSS idle {idle / 1024:.0f} MiB, "
              f"peak {up_peak / 1024:.0f} MiB ({up_peak / 1024 / a.mib:.2f}x content)")
        print(f"         server RSS 0.5 s after the upload {after_up / 1024:.0f} MiB")
        for i, (t, peak) in enumerate([(t_down, down_peak), (t_down2, down_peak2)]):
            print(f"download {a.mib} MiB (run {i + 1}): {a.mib / t:7.1f} MiB/s ({t:.2f} s), server RSS peak "
                  f"{peak / 1024:.0f} MiB")

        text = ("The system shall record every requirement with its rationale. " * 17000)[: 1 << 20]
        g = docs.CreateDocument(pb.CreateDocumentRequest(document=pb.Document(title="inline", content=text)),
                                metadata=md)
        for view, name in ((pb.DOCUMENT_VIEW_BASIC, "BASIC"), (pb.DOCUMENT_VIEW_FULL, "FULL")):
            lat = []
            for _ in range(a.gets):
                t0 = time.perf_counter()
                docs.GetDocument(pb.GetDocumentRequest(id=g.id, view=view), metadata=md)
                lat.append((time.perf_counter() - t0) * 1000)
            lat.sort()
            print(f"GetDocument {name:5} (1 MiB inline text, {a.gets} calls): p50 {statistics.median(lat):.2f} ms, "
                  f"p99 {lat[int(len(lat) * 0.99) - 1]:.2f} ms")
        if a.search:
            search(docs, pb, md)
        append(docs, pb, md, a.conversations, a.append_seconds)
    shutil.rmtree(out, ignore_errors=True)


def pct(lat, q):
    lat = sorted(lat)
    return lat[max(0, int(len(lat) * q) - 1)]


def search(docs, pb, md):
    from gen_documents import words

    v = words(7)  # the generator's vocabulary: early words are common, late ones rare
    queries = {
        "common word": v[:40],
        "two common words": [f"{a} {b}" for a, b in zip(v[:60], v[60:120])],
        "medium word": v[1000:1040],
        "rare word": v[-40:],
        "with a filter": [f"{w}|metadata.project = \"p7\"" for w in v[:40]],
    }
    for name, qs in queries.items():
        lat = []
        hits = 0
        for _ in range(2):
            for q in qs:
                text, _, flt = q.partition("|")
                t0 = time.perf_counter()
                r = docs.SearchDocuments(pb.SearchDocumentsRequest(query=text, filter=flt, page_size=20), metadata=md)
                lat.append((time.perf_counter() - t0) * 1000)
                hits += len(r.hits)
        print(f"SearchDocuments, {name:15} ({len(lat)} calls, {hits / len(lat):.1f} hits/page): "
              f"p50 {statistics.median(lat):.1f} ms, p99 {pct(lat, 0.99):.1f} ms")


def append(docs, pb, md, n, seconds):
    convs = [docs.CreateConversation(pb.CreateConversationRequest(conversation=pb.Conversation(title=f"c{i}")),
                                     metadata=md).id for i in range(n)]
    for batch in (1, 10):
        counts = [0] * n
        stop = time.perf_counter() + seconds

        def work(i):
            msgs = [pb.Message(role=pb.MESSAGE_ROLE_USER, content="x" * 200, token_count=50) for _ in range(batch)]
            while time.perf_counter() < stop:
                docs.AppendMessages(pb.AppendMessagesRequest(conversation_id=convs[i], messages=msgs), metadata=md)
                counts[i] += batch

        threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.perf_counter() - t0
        print(f"AppendMessages, {n} conversations, {batch:2} per call: {sum(counts) / took:8.0f} messages/s "
              f"({sum(counts) / batch / took:.0f} calls/s)")


if __name__ == "__main__":
    main()
