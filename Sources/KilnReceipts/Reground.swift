import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

/// Re-checking a receipt against the project as it is now: does each finding's evidence still sit
/// at its line (or where did it move), and does each changed file still have the hash the run left.
extension ReceiptService {
    func reground(runID: String, in wsID: String) async throws -> JSONValue {
        let row = try await receipt(runID: runID, in: wsID)
        guard
            let body = try? JSONDecoder().decode([String: JSONValue].self, from: Data((row.string("body") ?? "").utf8)),
            case .string(let pid)? = body["project_id"]
        else { throw APIError.conflict("The stored receipt is unreadable") }
        guard let project = try await projects.lookup(pid) else {
            throw APIError.notFound("The run's project is no longer open")
        }
        let evidence =
            (try? JSONDecoder().decode([String].self, from: Data((row.string("evidence") ?? "[]").utf8))) ?? []
        func read(_ path: String) -> [String]? {
            guard let abs = try? SafePath.resolve(root: project.root, relative: path),
                let d = FileManager.default.contents(atPath: abs)
            else { return nil }
            return String(decoding: d, as: UTF8.self).components(separatedBy: "\n")
        }
        var findings: [JSONValue] = []
        if case .array(let fs)? = body["findings"] {
            for (i, f) in fs.enumerated() {
                guard case .object(let o) = f, case .string(let path)? = o["path"], case .int(let line)? = o["line"]
                else { continue }
                var out = o
                let ev = i < evidence.count ? evidence[i] : ""
                let evLines = ev.components(separatedBy: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter {
                    !$0.isEmpty
                }
                guard let lines = read(path) else {
                    out["status"] = "missing"
                    findings.append(.object(out))
                    continue
                }
                let trimmed = lines.map { $0.trimmingCharacters(in: .whitespaces) }
                /// Where the evidence (its non-blank lines, in order) starts, nearest the recorded line.
                func starts() -> [Int] {
                    guard let first = evLines.first else { return [] }
                    return trimmed.indices.filter { s in
                        trimmed[s].contains(first)
                            && evLines.indices.allSatisfy { k in
                                s + k < trimmed.count && trimmed[s + k].contains(evLines[k])
                            }
                    }.map { $0 + 1 }
                }
                let found = starts()
                if evLines.isEmpty {
                    out["status"] = line <= lines.count ? "holds" : "changed"
                } else if found.contains(line) {
                    out["status"] = "holds"
                } else if let nearest = found.min(by: { abs($0 - line) < abs($1 - line) }) {
                    out["status"] = "moved"
                    out["new_line"] = .int(nearest)
                } else {
                    out["status"] = "changed"
                }
                findings.append(.object(out))
            }
        }
        var files: [JSONValue] = []
        if case .array(let fs)? = body["files_changed"] {
            for f in fs {
                guard case .object(var o) = f, case .string(let path)? = o["path"] else { continue }
                let now = (try? SafePath.resolve(root: project.root, relative: path)).flatMap {
                    FileManager.default.contents(atPath: $0)
                }
                .map { Crypto.hex(Crypto.sha256(Array($0))) }
                let after: String? = if case .string(let s)? = o["sha256_after"] { s } else { nil }
                o["sha256_now"] = now.map { .string($0) } ?? .null
                o["status"] = now == after ? "holds" : (now == nil ? "missing" : "changed")
                files.append(.object(o))
            }
        }
        return .object([
            "run_id": .string(row.string("run_id") ?? ""), "findings": .array(findings), "files": .array(files),
        ])
    }
}
