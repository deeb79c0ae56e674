import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization
import Testing

@testable import KilnApp
@testable import KilnAuth
@testable import KilnReceipts
@testable import KilnTestSupport

@Suite struct ReceiptTests {
    typealias M = ScriptedModel

    @Test func chainOf50RunsWithFailuresCancelsAndTampering() async throws {
        let x = try await AgentFixture.priced()
        try await using(x) { x in
            for i in 0..<50 {
                if i % 10 == 3 {
                    x.model.script([.status(400, #"{"error":{"message":"bad request"}}"#)])
                    let (_, last) = try await x.runToEnd()
                    #expect(last?.event == "run.failed")
                } else if i % 10 == 7 {
                    x.model.script([.openai((0..<50).map { M.text("\($0)") } + M.finish("stop"), delayMs: 100)])
                    let r = try await x.f.a.call(
                        "POST", "/api/agent/run", json: ["project_id": x.f.pid, "prompt": "slow"],
                        headers: ["Accept": "application/json"])
                    let run = try #require(r.json["run_id"] as? String)
                    try await Task.sleep(for: .milliseconds(150))
                    #expect(try await x.f.a.call("POST", "/api/agent/cancel/\(run)").status == 200)
                    #expect(parseSSE(try await x.follow(run).text).last?.event == "run.cancelled")
                } else {
                    x.model.script([.openai([M.text("done \(i)")] + M.finish("stop", input: 1000 + i, output: 10))])
                    let (_, last) = try await x.runToEnd()
                    #expect(last?.event == "run.completed")
                }
            }
            // Receipts are written right after the end event; wait for the last one.
            for _ in 0..<100 where try await x.chainRows().count < 50 { try await Task.sleep(for: .milliseconds(20)) }
            let head = try await x.f.a.call("GET", "/api/receipts/chain-head?ws_id=\(x.f.ws)")
            #expect(head.json["seq"] as? Int == 50)
            let lastRun = try #require(head.json["run_id"] as? String)
            var listed: [[String: Any]] = []
            var cursor = ""
            repeat {
                let page = try await x.f.a.call(
                    "GET", "/api/receipts?ws_id=\(x.f.ws)&limit=20" + (cursor.isEmpty ? "" : "&cursor=\(cursor)"))
                listed += page.json["items"] as? [[String: Any]] ?? []
                cursor = page.json["next_cursor"] as? String ?? ""
            } while !cursor.isEmpty
            #expect(listed.map { $0["seq"] as? Int ?? 0 } == Array(1...50))
            #expect(try await x.f.a.call("GET", "/api/receipts?ws_id=\(x.f.ws)&cursor=bm90LWEtbnVtYmVy").status == 400)
            #expect(try await x.f.a.call("GET", "/api/receipts/run_0000000000000000000000").status == 404)
            #expect(try await x.f.a.call("GET", "/api/agent/history?ws_id=\(x.f.ws)&cursor=bm9waXBl").status == 400)
            #expect(Set(listed.compactMap { $0["status"] as? String }) == ["completed", "failed", "cancelled"])
            #expect(listed.first?["prev_hash"] as? String == String(repeating: "0", count: 64))
            #expect(zip(listed.dropFirst(), listed).allSatisfy { $0["prev_hash"] as? String == $1["hash"] as? String })
            let ok = try await x.f.a.call("POST", "/api/receipts/\(lastRun)/verify")
            #expect(ok.json["ok"] as? Bool == true && ok.json["checked"] as? Int == 50, "\(ok.text)")

            // The hash is SHA-256 of the canonical body; the signature verifies with the public key.
            let one = try await x.f.a.call("GET", "/api/receipts/\(lastRun)")
            let pub = try await x.f.a.call("GET", "/api/receipts/public-key")
            var body = try JSONDecoder().decode([String: JSONValue].self, from: one.body)
            let hash = body.removeValue(forKey: "hash")
            let sig = body.removeValue(forKey: "signature")
            let canonical = try CanonicalJSON.bytes(.object(body))
            #expect(hash == .string(Crypto.hex(Crypto.sha256(canonical))))
            if case .string(let s)? = sig, let key = Base64URL.decode(pub.json["public_key"] as? String ?? ""),
                let sigBytes = Base64URL.decode(s)
            {
                #expect(Ed25519Key.verify(publicKey: key, message: canonical, signature: sigBytes))
            } else {
                Issue.record("no signature or key")
            }

            // Tampering, each reported at the right seq.
            let db = x.f.t.app.services.db
            let ws = x.f.ws
            func breakAt() async throws -> (Int?, String?) {
                let v = try await x.f.a.call("POST", "/api/receipts/\(lastRun)/verify")
                let b = v.json["first_break"] as? [String: Any]
                #expect(v.json["ok"] as? Bool == false)
                return (b?["seq"] as? Int, b?["reason"] as? String)
            }
            let original = try await x.chainRows()
            let b12 = original[11].string("body")!
            _ = try await db.write { tx in
                try tx.run(
                    "UPDATE receipts SET body = ? WHERE ws_id = ? AND seq = 12",
                    b12.replacingOccurrences(of: "\"status\":\"", with: "\"status\":\"x"), ws)
            }
            #expect(try await breakAt().0 == 12)
            _ = try await db.write { tx in
                try tx.run("UPDATE receipts SET body = ? WHERE ws_id = ? AND seq = 12", b12, ws)
            }
            #expect(try await x.f.a.call("POST", "/api/receipts/\(lastRun)/verify").json["ok"] as? Bool == true)
            // Delete one.
            _ = try await db.write { tx in try tx.run("DELETE FROM receipts WHERE ws_id = ? AND seq = 20", ws) }
            let (s1, r1) = try await breakAt()
            #expect(s1 == 20 && r1?.contains("missing") == true)
            let row20 = original[19]
            _ = try await db.write { tx in
                try tx.run(
                    "INSERT INTO receipts (ws_id, seq, run_id, body, hash, signature, evidence, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    ws, 20, row20.string("run_id"), row20.string("body"), row20.string("hash"),
                    row20.string("signature"), row20.string("evidence"), 0)
            }
            // Reorder two.
            _ = try await db.write { tx in
                try tx.run("UPDATE receipts SET seq = -1 WHERE ws_id = ? AND seq = 30", ws)
                try tx.run("UPDATE receipts SET seq = 30 WHERE ws_id = ? AND seq = 31", ws)
                try tx.run("UPDATE receipts SET seq = 31 WHERE ws_id = ? AND seq = -1", ws)
            }
            #expect(try await breakAt().0 == 30)

            // The offline verifier agrees (the real binary over the same data dir).
            if FileManager.default.isExecutableFile(atPath: TestApp.kilnBinary) {
                let (code, out, _) = await runProgram(
                    TestApp.kilnBinary, ["receipts", "verify", "--ws", ws] + x.f.t.storeArguments)
                #expect(code == 1 && out.contains("\"seq\":30"), "\(out)")
            }
        }
    }

    @Test func concurrentEndsGiveOneGapFreeChain() async throws {
        // Twelve runs at once: above the default of 8 per workspace, so the limit is raised here.
        let x = try await AgentFixture.priced { $0.set("--max-agent-runs-per-workspace", "16") }
        try await using(x) { x in
            x.model.script((0..<12).map { _ in .openai([M.text("ok")] + M.finish("stop")) })
            let runs = try await withThrowingTaskGroup(of: String.self) { g in
                for _ in 0..<12 { g.addTask { try await x.runToEnd().0 } }
                var all: [String] = []
                for try await r in g { all.append(r) }
                return all
            }
            for _ in 0..<100 where try await x.chainRows().count < 12 { try await Task.sleep(for: .milliseconds(20)) }
            let rows = try await x.chainRows()
            #expect(rows.map { $0.int("seq")! } == Array(1...12))
            #expect(Set(rows.compactMap { $0.string("run_id") }) == Set(runs))
            #expect(try await x.f.a.call("POST", "/api/receipts/\(runs[0])/verify").json["ok"] as? Bool == true)
        }
    }

    @Test func regroundReportsHoldsMovedChangedMissing() async throws {
        let x = try await AgentFixture.priced()
        try await using(x) { x in
            x.model.script([
                .openai(
                    M.call(
                        "f1", "record_finding",
                        ["path": "a.txt", "line": 2, "claim": "beta is the second letter", "evidence": "beta"])
                        + M.call(
                            "f2", "record_finding",
                            ["path": "c.txt", "line": 1, "claim": "c starts with one", "evidence": "one"], index: 1)
                        + M.call(
                            "e1", "edit_file", ["path": "c.txt", "old_string": "two", "new_string": "TWO"], index: 2)
                        + M.finish("tool_calls")),
                .openai([M.text("noted")] + M.finish("stop")),
            ])
            let (run, last) = try await x.runToEnd()
            #expect(last?.event == "run.completed")
            for _ in 0..<100 where try await x.chainRows().isEmpty { try await Task.sleep(for: .milliseconds(20)) }
            let receipt = try await x.f.a.call("GET", "/api/receipts/\(run)")
            #expect(
                (receipt.json["findings"] as? [[String: Any]])?.first?["evidence_sha256"] as? String
                    == Crypto.hex(Crypto.sha256(Array("beta".utf8))))
            #expect((receipt.json["tool_calls"] as? [[String: Any]])?.allSatisfy { $0["ok"] as? Int == 1 } == true)
            func reground() async throws -> ([String], [String], [String: Any]) {
                let r = try await x.f.a.call("POST", "/api/receipts/\(run)/reground")
                let fs = r.json["findings"] as? [[String: Any]] ?? []
                let files = r.json["files"] as? [[String: Any]] ?? []
                return (
                    fs.map { $0["status"] as? String ?? "" }, files.map { $0["status"] as? String ?? "" },
                    fs.first ?? [:]
                )
            }
            var (f, files, _) = try await reground()
            #expect(f == ["holds", "holds"] && files == ["holds"])
            try "new first line\nalpha\nbeta\ngamma\n".write(
                toFile: x.f.dir + "/a.txt", atomically: true, encoding: .utf8)
            try "zero\none\nTWO\n".write(toFile: x.f.dir + "/c.txt", atomically: true, encoding: .utf8)
            var first: [String: Any]
            (f, files, first) = try await reground()
            #expect(f == ["moved", "moved"] && first["new_line"] as? Int == 3 && files == ["changed"])
            try "alpha\nBETA\n".write(toFile: x.f.dir + "/a.txt", atomically: true, encoding: .utf8)
            try FileManager.default.removeItem(atPath: x.f.dir + "/c.txt")
            (f, files, _) = try await reground()
            #expect(f == ["changed", "missing"] && files == ["missing"])
        }
    }
}

@Suite struct CanonicalJSONTests {
    @Test func matchesRFC8785Rules() throws {
        let v: JSONValue = [
            "b": 1, "a": ["z": "x\u{1}\n\"\\é€😀", "\u{10000}": true, "\u{FB33}": .null], "c": [3, "s", false],
        ]
        let text = String(decoding: try CanonicalJSON.bytes(v), as: UTF8.self)
        // Keys by UTF-16 code units: U+10000 (D800 DC00) sorts before U+FB33.
        #expect(
            text
                == "{\"a\":{\"z\":\"x\\u0001\\n\\\"\\\\é€😀\",\"\u{10000}\":true,\"\u{FB33}\":null},\"b\":1,\"c\":[3,\"s\",false]}"
        )
        #expect(throws: CanonicalJSON.Unsupported.self) { try CanonicalJSON.bytes(["x": .double(1.5)]) }
    }
}
