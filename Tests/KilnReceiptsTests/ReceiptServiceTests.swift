import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnReceipts
@testable import KilnTestSupport

/// The receipt chain on its own: runs end (as a `RunObserver` is told), the chain grows, verifies,
/// and a changed row breaks it (no HTTP).
@Suite struct ReceiptServiceTests {
    func record(_ run: String, _ ws: String, status: String = "completed") -> RunRecord {
        let t = Date(timeIntervalSince1970: 1_767_225_600)
        return RunRecord(
            runID: run, wsID: ws, projectID: "prj_x", userID: "usr_x", model: "gpt-4o", prompt: "go", status: status,
            startedAt: t, endedAt: t.addingTimeInterval(3), inputTokens: 10, outputTokens: 5, steps: 1,
            calls: [.init(callID: "c1", tool: "read_file", argsSHA256: String(repeating: "a", count: 64), ok: true)],
            files: [.init(path: "a.txt", before: nil, after: String(repeating: "b", count: 64))], findings: [])
    }

    @Test func endedRunsFormAVerifiableChain() async throws {
        try await withTestApp(.inProcess) { t in
            let receipts = try #require(t.app.module(ReceiptsModule.self)).service
            let ws = "ws_receiptservice"
            for i in 1...3 { await receipts.runEnded(record("run_r\(i)", ws, status: i == 2 ? "failed" : "completed")) }
            await receipts.runEnded(record("run_r1", ws))  // a repeated end adds nothing
            #expect(try await receipts.head(wsID: ws).seq == 3)
            let ok = try await receipts.verify(runID: "run_r3", in: ws)
            #expect(ok.ok && ok.checked == 3)
            await #expect(throws: HTTPError.self) { _ = try await receipts.verify(runID: "run_r3", in: "ws_other") }
            try await t.app.services.db.write { tx in
                _ = try tx.run(
                    "UPDATE receipts SET body = replace(body, '\"failed\"', '\"completed\"') WHERE ws_id = ? AND seq = 2",
                    ws)
            }
            let broken = try await receipts.verify(runID: "run_r3", in: ws)
            #expect(!broken.ok && broken.breakSeq == 2)
        }
    }
}
