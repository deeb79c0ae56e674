import Foundation
import KilnHTTP

/// The read-only page of a share link: plain HTML, every text escaped, no script.
enum SharePage {
    static func escape(_ s: String) -> String { HTMLText.escape(s) }

    static func text(_ v: JSONValue?) -> String {
        switch v {
        case .string(let s)?: s
        case .int(let n)?: String(n)
        case nil, .null?: ""
        case let other?: other.jsonText
        }
    }

    static func head(_ title: String) -> String {
        """
        <!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escape(title))</title></head><body>
        <h1>\(escape(title))</h1>
        """
    }

    static func render(_ shared: JSONValue) -> String {
        let o = shared.objectValue ?? [:]
        switch o["subject"]?.objectValue?["type"]?.stringValue {
        case "file": return renderFile(o)
        case "receipt_chain": return renderChain(o)
        default: return renderRun(o)
        }
    }

    /// A file as it was when shared.
    static func renderFile(_ o: [String: JSONValue]) -> String {
        let file = o["file"]?.objectValue ?? [:]
        var h = head("Shared file " + text(file["path"]))
        h += "<p>As it was at \(escape(text(file["shared_at"]))) · sha256 \(escape(text(file["sha256"]))) · "
        h += "this link expires \(escape(text(o["expires_at"])))</p>"
        return h + "<pre>\(escape(text(file["content"])))</pre></body></html>\n"
    }

    /// A run's receipt and whether the workspace's chain up to it verifies.
    static func renderChain(_ o: [String: JSONValue]) -> String {
        let chain = o["chain"]?.objectValue ?? [:]
        var h = head("Shared receipt chain")
        let ok = chain["ok"] == .bool(true)
        h += "<p>The chain up to this receipt \(ok ? "verifies" : "does not verify") (\(escape(text(chain["checked"])))"
        h += " receipts checked) · this link expires \(escape(text(o["expires_at"])))</p>"
        h += "<h2>Receipt</h2><pre>\(escape((o["receipt"] ?? .null).jsonText))</pre>"
        return h + "<h2>Chain</h2><pre>\(escape((o["chain"] ?? .null).jsonText))</pre></body></html>\n"
    }

    static func renderRun(_ o: [String: JSONValue]) -> String {
        let run = o["run"]?.objectValue ?? [:]
        var h = head("Shared agent run")
        h += "<p>Status: \(escape(text(run["status"]))) · model \(escape(text(run["model"]))) · started "
        h += "\(escape(text(run["started_at"]))) · this link expires \(escape(text(o["expires_at"])))</p>"
        h += "<h2>Prompt</h2><pre>\(escape(text(run["prompt"])))</pre>"
        if let summary = run["summary"], summary != .null { h += "<h2>Summary</h2><pre>\(escape(text(summary)))</pre>" }
        h += "<h2>Transcript</h2>"
        if case .array(let msgs)? = run["transcript"] {
            for m in msgs {
                let x = m.objectValue ?? [:]
                h += "<h3>\(escape(text(x["role"])))</h3><pre>\(escape(text(x["content"])))</pre>"
            }
        }
        h += "<h2>Changes</h2>"
        if case .array(let diffs)? = run["diffs"], !diffs.isEmpty {
            for d in diffs {
                let x = d.objectValue ?? [:]
                h += "<h3>\(escape(text(x["path"])))</h3><pre>\(escape(text(x["diff"])))</pre>"
            }
        } else {
            h += "<p>No files changed.</p>"
        }
        if let receipt = o["receipt"], receipt != .null {
            h += "<h2>Receipt</h2><pre>\(escape(receipt.jsonText))</pre>"
        }
        return h + "</body></html>\n"
    }
}
