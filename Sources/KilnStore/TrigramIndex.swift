import CShims
import Foundation
import Glibc
import Synchronization

/// Kiln's own substring index over many documents (the design of Russ Cox's codesearch): for every
/// trigram, the sorted list of documents that contain it. A query's trigrams narrow the candidates;
/// callers verify candidates against the documents themselves (the index keeps no copy of the
/// content: writing one would cost more than building the postings). Each document carries a
/// `Stamp` (length, mtime, device, inode for files) so the owner can tell whether it still is what
/// was indexed.
///
/// Layout: immutable segments under `directory`, each one memory-mapped `<id>.idx` (documents,
/// trigram table, postings, paths). A rescan writes new segments for changed documents and marks
/// their older copies dead; `manifest.json` (replaced atomically) is the commit point, so a crash
/// leaves either the old or the new index. `compactIfNeeded` merges the postings of the live
/// documents into fewer segments when many are dead or segments are many. The index is a cache:
/// when it cannot be read it starts empty and `wasReset` tells the owner to rebuild it.
///
/// Documents with the same content (vendored copies, two versions of a package side by side) can be
/// added once: the later ones are *copies* that point at the first and have no postings of their
/// own. A candidate content brings its live copies with it, and the content's postings stay as
/// long as a live copy needs them, even after its own path is retired; compaction moves copies next
/// to their content.
///
/// Trigram keys fold ASCII letters to lower case and every byte above 0x7F to one of 16 values, so
/// a key has 21 bits; case-sensitive queries use the same keys (a superset) and verify exactly.
public final class TrigramIndex: @unchecked Sendable {
    public let directory: String
    /// True when the stored index could not be read and was emptied.
    public let wasReset: Bool
    /// A secret random number kept with the index (`content.seed`), for owners that key a fast
    /// content hash with it: nobody who cannot read the index can aim for a collision.
    public let contentSeed: UInt64

    /// One document: its segment's id and its number there.
    public struct DocumentRef: Hashable, Sendable {
        public let segment: Int
        public let doc: UInt32
        public init(segment: Int, doc: UInt32) {
            self.segment = segment
            self.doc = doc
        }
    }
    private struct State {
        var segments: [Segment] = []
        var dead: [Int: Set<UInt32>] = [:]
        var live: [String: DocumentRef] = [:]
        /// The live copies of each content that has any.
        var copies: [DocumentRef: [DocumentRef]] = [:]
        var nextID = 1

        func isLive(_ r: DocumentRef) -> Bool { !(dead[r.segment]?.contains(r.doc) ?? false) }

        /// Finds every live copy again, and checks that each points at a content document of the
        /// same length in a segment that is still there.
        mutating func linkCopies() throws {
            var byID: [Int: Segment] = [:]
            for seg in segments { byID[seg.id] = seg }
            var found: [DocumentRef: [DocumentRef]] = [:]
            for seg in segments where seg.hasCopies {
                for doc in 0..<UInt32(seg.documentCount) {
                    guard let target = seg.contentOf(doc), isLive(DocumentRef(segment: seg.id, doc: doc)) else {
                        continue
                    }
                    guard let t = byID[target.segment], Int(target.doc) < t.documentCount,
                        t.contentOf(target.doc) == nil,
                        t.stamp(target.doc).length == seg.stamp(doc).length
                    else {
                        throw IndexError.corrupt(
                            "segment \(seg.id) document \(doc) is a copy of a document that is not there")
                    }
                    found[target, default: []].append(DocumentRef(segment: seg.id, doc: doc))
                }
            }
            copies = found
        }

        /// Segments none of whose documents is live or needed by a live copy.
        func unused() -> [Int] {
            let needed = Set(copies.keys.map(\.segment))
            return segments.filter { !needed.contains($0.id) && (dead[$0.id]?.count ?? 0) >= $0.documentCount }.map(
                \.id)
        }
    }
    private let state = Mutex(State())
    private let gate = AsyncGate()

    static let keyBits = 21
    static let keySpace = 1 << keyBits

    /// Opens (or creates) the index in `directory`. One instance per directory and process: its owner
    /// keeps it, so every reader and writer sees the same segments.
    public init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var s = State()
        var reset = false
        if let data = FileManager.default.contents(atPath: directory + "/manifest.json") {
            do {
                let m = try JSONDecoder().decode(Manifest.self, from: data)
                guard m.version == 2 else { throw IndexError.corrupt("manifest version \(m.version)") }
                s.nextID = m.next
                for e in m.segments {
                    let seg = try Segment(directory: directory, id: e.id)
                    s.segments.append(seg)
                    s.dead[e.id] = Set(e.dead)
                }
            } catch {
                s = State()
                reset = true
            }
        }
        for seg in s.segments {
            let dead = s.dead[seg.id] ?? []
            for doc in 0..<UInt32(seg.documentCount) where !dead.contains(doc) {
                s.live[seg.paths[Int(doc)]] = DocumentRef(segment: seg.id, doc: doc)
            }
        }
        do { try s.linkCopies() } catch {
            s = State()
            reset = true
        }
        // Files no manifest names: an interrupted build, or a reset.
        let keep = Set(s.segments.map(\.id))
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            let stem = name.split(separator: ".").first.flatMap { Int($0) }
            if let stem, !keep.contains(stem) { unlink(directory + "/" + name) }
            if stem == nil, reset, name == "manifest.json" { unlink(directory + "/" + name) }
            if let stem, stem >= s.nextID { s.nextID = stem + 1 }
        }
        wasReset = reset
        contentSeed = try TrigramIndex.loadSeed(directory + "/content.seed")
        state.withLock { $0 = s }
    }

    /// The seed file's 8 bytes, or a new random seed written with mode 0600 when the file is missing
    /// or damaged (content hashes made with another seed then simply differ).
    static func loadSeed(_ path: String) throws -> UInt64 {
        if let d = FileManager.default.contents(atPath: path), d.count == 8 {
            return d.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        }
        var g = SystemRandomNumberGenerator()
        let seed = g.next()
        let fd = open(path + ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw IndexError.io("create \(path): errno \(errno)") }
        var le = seed.littleEndian
        let ok = withUnsafeBytes(of: &le) { write(fd, $0.baseAddress, 8) } == 8
        close(fd)
        guard ok, rename(path + ".tmp", path) == 0 else {
            unlink(path + ".tmp")
            throw IndexError.io("write \(path): errno \(errno)")
        }
        return seed
    }

    /// Runs `body` while no other writer of this index runs (rescans are serialised per index).
    public func exclusive<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        await gate.acquire()
        defer { gate.release() }
        return try await body()
    }

    /// The paths of the live documents.
    public func livePaths() -> Set<String> { state.withLock { Set($0.live.keys) } }

    /// A consistent view for readers; segments stay mapped as long as a snapshot holds them.
    public func snapshot() -> Snapshot {
        state.withLock { Snapshot(segments: $0.segments, dead: $0.dead, copies: $0.copies) }
    }

    /// A builder for a new segment (callers `finish` it and pass its id to `commit`). A finished
    /// builder passed as `reusing` is started again with its buffers, which saves mapping and
    /// zeroing tens of megabytes per segment.
    public func makeBuilder(reusing old: Builder? = nil) throws -> Builder {
        let id = state.withLock { s -> Int in
            defer { s.nextID += 1 }
            return s.nextID
        }
        if let old, old.isFinished {
            old.restart(id: id)
            return old
        }
        return try Builder(directory: directory, id: id)
    }

    /// Adds finished segments and retires documents: every path in `removing`, and every older copy of
    /// a path the new segments hold.
    public func commit(adding ids: [Int], removing: some Sequence<String>) throws {
        let added = try ids.map { try Segment(directory: directory, id: $0) }
        let dropped: [Int] = try state.withLock { s in
            var next = s
            func retire(_ path: String) {
                if let r = next.live.removeValue(forKey: path) { next.dead[r.segment, default: []].insert(r.doc) }
            }
            for p in removing { retire(p) }
            for seg in added {
                next.segments.append(seg)
                next.dead[seg.id] = []
                for doc in 0..<seg.documentCount {
                    let p = seg.paths[doc]
                    retire(p)
                    next.live[p] = DocumentRef(segment: seg.id, doc: UInt32(doc))
                }
            }
            try next.linkCopies()
            let empty = next.unused()
            next.segments.removeAll { empty.contains($0.id) }
            for id in empty { next.dead[id] = nil }
            try writeManifest(next)
            s = next
            return empty
        }
        for id in dropped { removeFiles(id) }
    }

    /// Deletes finished segments that will not be committed (a failed or cancelled build).
    public func discard(_ ids: [Int]) { for id in ids { removeFiles(id) } }

    /// Merges the live documents' postings into fresh segments (no document is read again) when a
    /// quarter of the documents are dead or there are more than twice the segments the live content
    /// needs. Each content moves with its live copies; a content whose own path is dead but that
    /// has live copies continues under the first copy's path.
    public func compactIfNeeded(segmentBytes: UInt64) throws {
        let s = state.withLock { $0 }
        let total = s.segments.reduce(0) { $0 + $1.documentCount }
        let deadCount = s.dead.values.reduce(0) { $0 + $1.count }
        var byID: [Int: Segment] = [:]
        for seg in s.segments { byID[seg.id] = seg }
        /// The live entries (path and stamp) that share one content document, its own first.
        func entries(_ seg: Segment, _ doc: UInt32) -> [(String, Stamp)] {
            guard seg.contentOf(doc) == nil else { return [] }  // copies travel with their content
            let r = DocumentRef(segment: seg.id, doc: doc)
            var out: [(String, Stamp)] = s.isLive(r) ? [(seg.paths[Int(doc)], seg.stamp(doc))] : []
            for c in s.copies[r] ?? [] {
                if let cs = byID[c.segment] { out.append((cs.paths[Int(c.doc)], cs.stamp(c.doc))) }
            }
            return out
        }
        func neededBytes(_ seg: Segment) -> UInt64 {
            var bytes: UInt64 = 0
            for doc in 0..<UInt32(seg.documentCount) where !entries(seg, doc).isEmpty { bytes += seg.stamp(doc).length }
            return bytes
        }
        let sizes = s.segments.map(neededBytes)
        let needed = Int(sizes.reduce(0, +) / max(1, segmentBytes)) + 1
        guard (s.segments.count > 32 && s.segments.count > 2 * needed) || (total > 0 && deadCount * 4 > total) else {
            return
        }
        var built: [Int] = []
        do {
            var group: [Segment] = []
            var groupBytes: UInt64 = 0
            func flush() throws {
                guard !group.isEmpty else { return }
                let b = try makeBuilder()
                for seg in group { b.merge(seg, liveEntries: { entries(seg, $0) }) }
                if b.documentCount > 0 {
                    try b.finish()
                    built.append(b.segmentID)
                } else {
                    b.discard()
                }
                group = []
                groupBytes = 0
            }
            for (seg, bytes) in zip(s.segments, sizes) {
                if groupBytes > 0 && groupBytes + bytes > segmentBytes { try flush() }
                group.append(seg)
                groupBytes += bytes
            }
            try flush()
        } catch {
            discard(built)
            throw error
        }
        let fresh = try built.map { try Segment(directory: directory, id: $0) }
        let old: [Int] = try state.withLock { s in
            var next = State()
            next.nextID = s.nextID
            next.segments = fresh
            for seg in fresh {
                next.dead[seg.id] = []
                for doc in 0..<seg.documentCount {
                    next.live[seg.paths[doc]] = DocumentRef(segment: seg.id, doc: UInt32(doc))
                }
            }
            try next.linkCopies()
            try writeManifest(next)
            let old = s.segments.map(\.id)
            s = next
            return old
        }
        for id in old { removeFiles(id) }
    }

    private struct Manifest: Codable {
        struct Entry: Codable {
            let id: Int
            let dead: [UInt32]
        }
        let version: Int
        let next: Int
        let segments: [Entry]
    }

    private func writeManifest(_ s: State) throws {
        let m = Manifest(
            version: 2, next: s.nextID,
            segments: s.segments.map { .init(id: $0.id, dead: (s.dead[$0.id] ?? []).sorted()) })
        let tmp = directory + "/manifest.json.tmp"
        try JSONEncoder().encode(m).write(to: URL(fileURLWithPath: tmp))
        guard rename(tmp, directory + "/manifest.json") == 0 else {
            throw IndexError.io("rename manifest: errno \(errno)")
        }
    }

    private func removeFiles(_ id: Int) { unlink(directory + "/\(id).idx") }

    // MARK: Keys

    /// Byte → 7-bit key symbol: ASCII lower-cased; bytes above 0x7F share 16 values.
    static let fold: [UInt8] = (0..<256).map { (i: Int) -> UInt8 in
        let b = UInt8(i)
        if b >= 0x80 { return 0x10 | (b & 0x0F) }
        return b >= 65 && b <= 90 ? b + 32 : b
    }

    /// The distinct keys of `bytes`' trigrams. With `asciiOnly`, trigrams holding a non-ASCII byte are
    /// left out (a case-insensitive query cannot know how such bytes are spelled in the text).
    public static func keys(of bytes: [UInt8], asciiOnly: Bool) -> [UInt32] {
        guard bytes.count >= 3 else { return [] }
        var out = Set<UInt32>()
        for i in 0...(bytes.count - 3) {
            let a = bytes[i]
            let b = bytes[i + 1]
            let c = bytes[i + 2]
            if asciiOnly && (a | b | c) >= 0x80 { continue }
            out.insert(key(a, b, c))
        }
        return Array(out)
    }

    public static func key(_ a: UInt8, _ b: UInt8, _ c: UInt8) -> UInt32 {
        UInt32(fold[Int(a)]) << 14 | UInt32(fold[Int(b)]) << 7 | UInt32(fold[Int(c)])
    }

    public enum IndexError: Error, CustomStringConvertible {
        case io(String)
        case corrupt(String)
        public var description: String {
            switch self {
            case .io(let m): "index I/O: \(m)"
            case .corrupt(let m): "index corrupt: \(m)"
            }
        }
    }
}

/// A first-come first-served lock for async code (a writer holds it across suspension points).
final class AsyncGate: Sendable {
    private let state = Mutex<(busy: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func acquire() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if !s.busy {
                    s.busy = true
                    return true
                }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty {
                s.busy = false
                return nil
            }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}
