import CShims
import Foundation
import Glibc
import KilnCore
import KilnHTTP
import KilnStore
import Synchronization

/// The symbols of one project, kept in `symbols.bin` beside its trigram index rather than in SQLite:
/// a large tree has hundreds of thousands, which SQLite takes seconds to insert and a lookup would
/// read row by row. In memory the table is columns sorted by lower-cased name, so exact and prefix
/// lookups are binary searches and a fuzzy one is a scan over packed bytes. A rescan that changes
/// files writes a whole new table and renames it into place.
final class SymbolTable: @unchecked Sendable {
    let file: String
    private struct State {
        var columns: SymbolColumns
        /// False when the stored table was missing or unreadable: the next rescan extracts the
        /// symbols of every file again, not only of the changed ones.
        var complete: Bool
    }
    private let state: Mutex<State>

    init(file: String) {
        self.file = file
        if let data = FileManager.default.contents(atPath: file),
            let columns = try? SymbolColumns(decoding: [UInt8](data))
        {
            state = Mutex(State(columns: columns, complete: true))
        } else {
            state = Mutex(State(columns: SymbolColumns(), complete: false))
        }
    }

    var isComplete: Bool { state.withLock { $0.complete } }

    func snapshot() -> SymbolColumns { state.withLock { $0.columns } }

    /// Drops the symbols of `removing` (of every file when `fresh`), adds `adding`, and stores the
    /// result. Callers serialise writers (rescans hold the index's exclusive gate). When the store
    /// fails, the table serves the new symbols but is no longer complete.
    func replace(removing: Set<String>, adding: consuming [SymbolBatch], fresh: Bool) throws {
        let old = fresh ? SymbolColumns() : snapshot()
        // The batches are handed on, so they are freed before the table is encoded: a large
        // tree's are tens of megabytes.
        let next = SymbolColumns(keeping: old, without: removing, adding: adding)
        let bytes = next.encoded()
        let tmp = file + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        var failure: Int32? = fd < 0 ? errno : nil
        if fd >= 0 {
            var done = 0
            bytes.withUnsafeBytes { b in
                while done < b.count {
                    let w = write(fd, b.baseAddress! + done, b.count - done)
                    if w < 0 {
                        if errno == EINTR { continue }
                        failure = errno
                        return
                    }
                    done += w
                }
            }
            close(fd)
            if failure == nil, rename(tmp, file) != 0 { failure = errno }
        }
        if let failure {
            unlink(tmp)
            // The stored table no longer matches the files the database calls unchanged (it is
            // written at the same time): it goes, and the next rescan extracts every file again.
            unlink(file)
            state.withLock { $0 = State(columns: next, complete: false) }
            throw SymbolTableError.io("store \(file): errno \(failure)")
        }
        state.withLock { $0 = State(columns: next, complete: true) }
    }
}

enum SymbolTableError: Error { case io(String), corrupt(String) }

/// Symbols as extraction finds them, before the table sorts them: names packed into one buffer,
/// the strings that repeat (paths, kinds, languages, scopes) interned. Far smaller than as many
/// `Symbol` values, which a large tree has hundreds of thousands of.
struct SymbolBatch: Sendable {
    private(set) var names: [UInt8] = []
    private(set) var nameEnds: [UInt32] = []
    private(set) var strings: [String] = []
    private var ids: [String: UInt32] = [:]
    /// Symbols come file by file: the last path's id saves hashing it again.
    private var lastPath: (String, UInt32)? = nil
    /// Path, scope (or `.max`), kind and language are indexes into `strings`.
    private(set) var rows: [SymbolColumns.Record] = []

    var count: Int { rows.count }

    private mutating func intern(_ s: String) -> UInt32 {
        if let id = ids[s] { return id }
        let id = UInt32(strings.count)
        strings.append(s)
        ids[s] = id
        return id
    }

    mutating func add(_ s: Symbol) {
        guard !s.name.isEmpty else { return }
        names.append(contentsOf: s.name.utf8)
        nameEnds.append(UInt32(names.count))
        let path: UInt32
        if let last = lastPath, last.0 == s.path {
            path = last.1
        } else {
            path = intern(s.path)
            lastPath = (s.path, path)
        }
        rows.append(
            .init(
                path: path, line: UInt32(clamping: s.line), scope: s.scope.map { intern($0) } ?? .max,
                kind: intern(s.kind), language: intern(s.language)))
    }

    mutating func add(contentsOf symbols: [Symbol]) { for s in symbols { add(s) } }

    /// The symbols of the paths in `copies`, each under every copy of it (files of the same content):
    /// a batch of their own, so this one's arrays are not grown again.
    func copies(_ copies: [String: [String]]) -> SymbolBatch {
        var out = SymbolBatch()
        var labels: [UInt32: [UInt32]] = [:]
        for (content, copyPaths) in copies {
            if let id = ids[content] { labels[id] = copyPaths.map { out.intern($0) } }
        }
        guard !labels.isEmpty else { return out }
        var mapped: [UInt32: UInt32] = [:]
        func map(_ id: UInt32) -> UInt32 {
            if id == .max { return id }
            if let m = mapped[id] { return m }
            let m = out.intern(strings[Int(id)])
            mapped[id] = m
            return m
        }
        for (i, row) in rows.enumerated() {
            guard let copyIDs = labels[row.path] else { continue }
            let name = names[(i == 0 ? 0 : Int(nameEnds[i - 1]))..<Int(nameEnds[i])]
            let scope = map(row.scope)
            let kind = map(row.kind)
            let language = map(row.language)
            for id in copyIDs {
                out.names.append(contentsOf: name)
                out.nameEnds.append(UInt32(out.names.count))
                out.rows.append(.init(path: id, line: row.line, scope: scope, kind: kind, language: language))
            }
        }
        return out
    }
}
