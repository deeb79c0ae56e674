import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP

/// A Jupyter notebook file (nbformat 4) as Kiln edits it: the parsed document with every field it
/// holds, known or not, so a save loses nothing. Cells of a 4.4 notebook have no ids; they get
/// deterministic ones (`cell-<n>`) until a save writes ids and marks the file 4.5, as JupyterLab does.
struct NotebookFile: Sendable {
    var top: [String: JSONValue]
    var cells: [[String: JSONValue]]
    /// The file's bytes as read (its ETag is their hash).
    let etag: String

    static let maxBytes = 64 << 20
    static let cellTypes: Set<String> = ["code", "markdown", "raw"]

    /// The ETag of a file's bytes.
    static func etag(_ bytes: [UInt8]) -> String { String(Crypto.hex(Crypto.sha256(bytes)).prefix(32)) }

    /// Parses a file; 422 naming what is wrong with one that is not an nbformat 4 notebook.
    static func parse(_ bytes: [UInt8]) throws -> NotebookFile {
        guard let v = try? JSONDecoder().decode(JSONValue.self, from: Data(bytes)), case .object(let top) = v else {
            throw HTTPError(HTTPStatus(422), code: "validation_failed", message: "The file is not JSON: not a notebook")
        }
        guard case .int(4)? = top["nbformat"] else {
            throw HTTPError(
                HTTPStatus(422), code: "validation_failed",
                message:
                    "Only nbformat 4 notebooks are supported (this one says \(top["nbformat"]?.jsonText ?? "nothing"))")
        }
        guard case .array(let raw)? = top["cells"] else {
            throw HTTPError(HTTPStatus(422), code: "validation_failed", message: "The notebook has no cells array")
        }
        var cells: [[String: JSONValue]] = []
        var seen = Set<String>()
        for (i, c) in raw.enumerated() {
            guard case .object(var cell) = c, case .string(let type)? = cell["cell_type"] else {
                throw HTTPError(HTTPStatus(422), code: "validation_failed", message: "Cell \(i) has no cell_type")
            }
            _ = type
            // Ids as stored, or deterministic ones (unique) for cells that have none.
            var id = cell["id"]?.stringValue ?? "cell-\(i + 1)"
            while seen.contains(id) { id += "-\(i + 1)" }
            seen.insert(id)
            cell["id"] = .string(id)
            cells.append(cell)
        }
        var t = top
        t["cells"] = nil
        return NotebookFile(top: t, cells: cells, etag: etag(bytes))
    }

    /// A new notebook (nbformat 4.5) for `kernel` (a kernelspec name).
    static func empty(kernel: String, language: String) -> NotebookFile {
        NotebookFile(
            top: [
                "nbformat": 4, "nbformat_minor": 5,
                "metadata": [
                    "kernelspec": [
                        "name": .string(kernel), "display_name": .string(kernel), "language": .string(language),
                    ],
                    "language_info": ["name": .string(language)],
                ],
            ], cells: [], etag: "")
    }

    var kernel: String? { top["metadata"]?.objectValue?["kernelspec"]?.objectValue?["name"]?.stringValue }

    func index(of cellID: String) -> Int? { cells.firstIndex { $0["id"]?.stringValue == cellID } }

    /// The file's text as nbformat writes it: keys sorted, one-space indent, a final newline. Every
    /// cell carries its id, so the file is 4.5 from then on.
    func render() -> [UInt8] {
        var t = top
        t["cells"] = .array(cells.map { .object($0) })
        if case .int(let minor)? = t["nbformat_minor"], minor < 5 { t["nbformat_minor"] = 5 }
        var out = ""
        NotebookJSON.write(.object(t), indent: 0, into: &out)
        out += "\n"
        return Array(out.utf8)
    }

    // MARK: Cells

    static func newID() -> String { IDs.randomBase62(12) }

    /// Source as nbformat stores it: a list of lines, each but the last ending in a newline.
    static func lines(_ text: String) -> JSONValue {
        guard !text.isEmpty else { return .array([]) }
        var parts: [JSONValue] = []
        var current = ""
        for ch in text {
            current.append(ch)
            if ch == "\n" {
                parts.append(.string(current))
                current = ""
            }
        }
        if !current.isEmpty { parts.append(.string(current)) }
        return .array(parts)
    }

    /// A multiline field (source, text) as one string, whichever way it is stored.
    static func text(_ v: JSONValue?) -> String {
        switch v {
        case .string(let s)?: s
        case .array(let a)?: a.compactMap(\.stringValue).joined()
        default: ""
        }
    }

    static func cell(type: String, source: String, id: String) -> [String: JSONValue] {
        var c: [String: JSONValue] = [
            "id": .string(id), "cell_type": .string(type), "metadata": [:], "source": lines(source),
        ]
        if type == "code" {
            c["outputs"] = []
            c["execution_count"] = .null
        }
        return c
    }

    /// Changes a cell's type, keeping what both kinds share (a code cell gains empty outputs).
    static func retype(_ cell: [String: JSONValue], to type: String) -> [String: JSONValue] {
        var c = cell
        c["cell_type"] = .string(type)
        if type == "code" {
            if c["outputs"] == nil { c["outputs"] = [] }
            if c["execution_count"] == nil { c["execution_count"] = .null }
        } else {
            c["outputs"] = nil
            c["execution_count"] = nil
        }
        return c
    }

    /// An output as the API shows it: stream text as one string.
    static func shownOutput(_ out: JSONValue) -> JSONValue {
        guard case .object(var x) = out else { return out }
        if x["text"] != nil { x["text"] = .string(text(x["text"])) }
        return .object(x)
    }

    /// A cell as the API shows it: the source (and stream texts) as single strings.
    static func shown(_ c: [String: JSONValue]) -> JSONValue {
        var o = c
        o["source"] = .string(text(c["source"]))
        if case .array(let outs)? = c["outputs"] {
            o["outputs"] = .array(
                outs.map { out in
                    guard case .object(var x) = out else { return out }
                    if x["text"] != nil { x["text"] = .string(text(x["text"])) }
                    return .object(x)
                })
        }
        return .object(o)
    }
}

/// Writes JSON the way Python's `json.dumps(…, sort_keys=True, indent=1, ensure_ascii=False)` does,
/// which is how nbformat saves notebooks (so a Kiln save diffs cleanly against Jupyter's).
enum NotebookJSON {
    static func write(_ v: JSONValue, indent: Int, into out: inout String) {
        switch v {
        case .object(let o):
            if o.isEmpty {
                out += "{}"
                return
            }
            out += "{\n"
            let keys = o.keys.sorted()
            for (i, k) in keys.enumerated() {
                out += String(repeating: " ", count: indent + 1)
                JSONValue.writeString(k, to: &out)
                out += ": "
                write(o[k]!, indent: indent + 1, into: &out)
                out += i == keys.count - 1 ? "\n" : ",\n"
            }
            out += String(repeating: " ", count: indent) + "}"
        case .array(let a):
            if a.isEmpty {
                out += "[]"
                return
            }
            out += "[\n"
            for (i, x) in a.enumerated() {
                out += String(repeating: " ", count: indent + 1)
                write(x, indent: indent + 1, into: &out)
                out += i == a.count - 1 ? "\n" : ",\n"
            }
            out += String(repeating: " ", count: indent) + "]"
        default:
            out += v.jsonText
        }
    }
}
