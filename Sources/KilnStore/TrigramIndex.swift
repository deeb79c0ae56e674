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
        public init(segment: Int, doc: UInt32) { self.segment = segment; self.doc = doc }
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
                    guard let target = seg.contentOf(doc), isLive(DocumentRef(segment: seg.id, doc: doc)) else { continue }
                    guard let t = byID[target.segment], Int(target.doc) < t.documentCount, t.contentOf(target.doc) == nil,
                          t.stamp(target.doc).length == seg.stamp(doc).length else {
                        throw IndexError.corrupt("segment \(seg.id) document \(doc) is a copy of a document that is not there")
                    }
                    found[target, default: []].append(DocumentRef(segment: seg.id, doc: doc))
                }
            }
            copies = found
        }

        /// Segments none of whose documents is live or needed by a live copy.
        func unused() -> [Int] {
            let needed = Set(copies.keys.map(\.segment))
            return segments.filter { !needed.contains($0.id) && (dead[$0.id]?.count ?? 0) >= $0.documentCount }.map(\.id)
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
            for doc in 0..<UInt32(seg.documentCount) where !dead.contains(doc) { s.live[seg.paths[Int(doc)]] = DocumentRef(segment: seg.id, doc: doc) }
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
        guard ok, rename(path + ".tmp", path) == 0 else { unlink(path + ".tmp"); throw IndexError.io("write \(path): errno \(errno)") }
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
    public func snapshot() -> Snapshot { state.withLock { Snapshot(segments: $0.segments, dead: $0.dead, copies: $0.copies) } }

    /// A builder for a new segment (callers `finish` it and pass its id to `commit`). A finished
    /// builder passed as `reusing` is started again with its buffers, which saves mapping and
    /// zeroing tens of megabytes per segment.
    public func makeBuilder(reusing old: Builder? = nil) throws -> Builder {
        let id = state.withLock { s -> Int in defer { s.nextID += 1 }; return s.nextID }
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
            guard seg.contentOf(doc) == nil else { return [] }   // copies travel with their content
            let r = DocumentRef(segment: seg.id, doc: doc)
            var out: [(String, Stamp)] = s.isLive(r) ? [(seg.paths[Int(doc)], seg.stamp(doc))] : []
            for c in s.copies[r] ?? [] { if let cs = byID[c.segment] { out.append((cs.paths[Int(c.doc)], cs.stamp(c.doc))) } }
            return out
        }
        func neededBytes(_ seg: Segment) -> UInt64 {
            var bytes: UInt64 = 0
            for doc in 0..<UInt32(seg.documentCount) where !entries(seg, doc).isEmpty { bytes += seg.stamp(doc).length }
            return bytes
        }
        let sizes = s.segments.map(neededBytes)
        let needed = Int(sizes.reduce(0, +) / max(1, segmentBytes)) + 1
        guard (s.segments.count > 32 && s.segments.count > 2 * needed) || (total > 0 && deadCount * 4 > total) else { return }
        var built: [Int] = []
        do {
            var group: [Segment] = []
            var groupBytes: UInt64 = 0
            func flush() throws {
                guard !group.isEmpty else { return }
                let b = try makeBuilder()
                for seg in group { b.merge(seg, liveEntries: { entries(seg, $0) }) }
                if b.documentCount > 0 { try b.finish(); built.append(b.segmentID) } else { b.discard() }
                group = []; groupBytes = 0
            }
            for (seg, bytes) in zip(s.segments, sizes) {
                if groupBytes > 0 && groupBytes + bytes > segmentBytes { try flush() }
                group.append(seg); groupBytes += bytes
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
                for doc in 0..<seg.documentCount { next.live[seg.paths[doc]] = DocumentRef(segment: seg.id, doc: UInt32(doc)) }
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
        struct Entry: Codable { let id: Int; let dead: [UInt32] }
        let version: Int
        let next: Int
        let segments: [Entry]
    }

    private func writeManifest(_ s: State) throws {
        let m = Manifest(version: 2, next: s.nextID, segments: s.segments.map { .init(id: $0.id, dead: (s.dead[$0.id] ?? []).sorted()) })
        let tmp = directory + "/manifest.json.tmp"
        try JSONEncoder().encode(m).write(to: URL(fileURLWithPath: tmp))
        guard rename(tmp, directory + "/manifest.json") == 0 else { throw IndexError.io("rename manifest: errno \(errno)") }
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
            let a = bytes[i], b = bytes[i + 1], c = bytes[i + 2]
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
            switch self { case .io(let m): "index I/O: \(m)"; case .corrupt(let m): "index corrupt: \(m)" }
        }
    }

    // MARK: Reading

    public struct Snapshot: Sendable {
        public let segments: [Segment]
        let dead: [Int: Set<UInt32>]
        let copies: [DocumentRef: [DocumentRef]]
        let byID: [Int: Segment]

        init(segments: [Segment], dead: [Int: Set<UInt32>], copies: [DocumentRef: [DocumentRef]]) {
            self.segments = segments; self.dead = dead; self.copies = copies
            var m: [Int: Segment] = [:]
            for seg in segments { m[seg.id] = seg }
            byID = m
        }

        public var documentCount: Int { segments.reduce(0) { $0 + $1.documentCount - (dead[$1.id]?.count ?? 0) } }

        /// Calls `body` for every live document holding all `keys` (every live document when `keys` is
        /// empty), segment by segment, a content's live copies right after it; `body` returns false to stop.
        public func forEachCandidate(_ keys: [UInt32], _ body: (Segment, UInt32) throws -> Bool) rethrows {
            for seg in segments {
                let d = dead[seg.id] ?? []
                if keys.isEmpty {
                    for doc in 0..<UInt32(seg.documentCount) where !d.contains(doc) { if try !body(seg, doc) { return } }
                    continue
                }
                var lists: [UnsafeBufferPointer<UInt32>] = []
                var missing = false
                for k in keys {
                    guard let l = seg.postings(for: k) else { missing = true; break }
                    lists.append(l)
                }
                if missing { continue }
                lists.sort { $0.count < $1.count }
                var result = Array(lists[0])
                for l in lists.dropFirst() {
                    if result.isEmpty { break }
                    result = Snapshot.intersect(result, l)
                }
                // A posting past the document table could only come from a damaged file: skipped.
                for doc in result where Int(doc) < seg.documentCount {
                    if !d.contains(doc), try !body(seg, doc) { return }
                    for c in copies[DocumentRef(segment: seg.id, doc: doc)] ?? [] {
                        if let cs = byID[c.segment], try !body(cs, c.doc) { return }
                    }
                }
            }
        }

        /// Sorted intersection; gallops through the longer list.
        static func intersect(_ a: [UInt32], _ b: UnsafeBufferPointer<UInt32>) -> [UInt32] {
            var out: [UInt32] = []
            out.reserveCapacity(a.count)
            var j = 0
            let n = b.count
            for x in a {
                var step = 1
                var hi = j
                while hi < n && b[hi] < x { j = hi + 1; hi = j + step; step <<= 1 }
                hi = min(hi, n)
                var lo = j
                while lo < hi { let mid = (lo + hi) / 2; if b[mid] < x { lo = mid + 1 } else { hi = mid } }
                j = lo
                if j == n { break }
                if b[j] == x { out.append(x); j += 1 }
            }
            return out
        }
    }

    /// What the owner knows about a document when it was indexed; for a file: its length, mtime
    /// (nanoseconds), device and inode.
    public struct Stamp: Sendable, Equatable {
        public var length: UInt64
        public var modified: Int64
        public var device: UInt64
        public var inode: UInt64
        public init(length: UInt64, modified: Int64 = 0, device: UInt64 = 0, inode: UInt64 = 0) {
            self.length = length; self.modified = modified; self.device = device; self.inode = inode
        }
    }

    /// One immutable, memory-mapped segment.
    public final class Segment: @unchecked Sendable {
        public let id: Int
        public let documentCount: Int
        /// Document paths, by document number.
        public let paths: [String]
        private let map: UnsafeMutableRawPointer
        private let mapSize: Int
        private let docTable: UnsafeRawPointer
        /// Per document, the content it is a copy of (segment id, document; 0, 0 for its own), or nil
        /// when no document is a copy (and in version 2 segments, which had no table).
        private let copyTable: UnsafePointer<UInt32>?
        fileprivate let keys: UnsafeBufferPointer<UInt32>
        fileprivate let starts: UnsafePointer<UInt32>
        fileprivate let postingsBase: UnsafePointer<UInt32>

        static let magic: UInt32 = 0x3249_544B   // "KTI2"
        /// 3: a copy table follows the document table.
        static let version: UInt32 = 3
        static let headerSize = 32
        static let docEntrySize = 32

        init(directory: String, id: Int) throws {
            self.id = id
            let (m, size) = try Segment.map(directory + "/\(id).idx")
            guard let m, size >= Segment.headerSize else { throw IndexError.corrupt("segment \(id) has no header") }
            map = m; mapSize = size
            let h = UnsafeRawPointer(m)
            let version = h.load(fromByteOffset: 4, as: UInt32.self)
            let docs = Int(h.load(fromByteOffset: 8, as: UInt32.self))
            let keyCount = Int(h.load(fromByteOffset: 12, as: UInt32.self))
            let postingCount = Int(h.load(fromByteOffset: 16, as: UInt64.self))
            let pathBytes = Int(h.load(fromByteOffset: 24, as: UInt64.self))
            let docOff = Segment.headerSize
            let copyOff = docOff + docs * Segment.docEntrySize
            let keyOff = copyOff + (version >= 3 ? docs * 8 : 0)
            let startOff = keyOff + keyCount * 4
            let postOff = startOff + (keyCount + 1) * 4
            let pathOff = postOff + postingCount * 4
            guard h.load(as: UInt32.self) == Segment.magic, version == 2 || version == 3, postingCount < Int(UInt32.max), pathOff + pathBytes == size else {
                munmap(m, size)
                throw IndexError.corrupt("segment \(id) has a bad size or magic")
            }
            documentCount = docs
            docTable = h + docOff
            let copies = (h + copyOff).assumingMemoryBound(to: UInt32.self)
            copyTable = version >= 3 && (0..<docs).contains { copies[2 * $0] != 0 } ? copies : nil
            keys = UnsafeBufferPointer(start: (h + keyOff).assumingMemoryBound(to: UInt32.self), count: keyCount)
            starts = (h + startOff).assumingMemoryBound(to: UInt32.self)
            postingsBase = (h + postOff).assumingMemoryBound(to: UInt32.self)
            var names: [String] = []
            names.reserveCapacity(docs)
            let pb = UnsafeBufferPointer(start: (h + pathOff).assumingMemoryBound(to: UInt8.self), count: pathBytes)
            var start = 0
            for i in 0..<pathBytes where pb[i] == 0 {
                names.append(String(decoding: UnsafeBufferPointer(rebasing: pb[start..<i]), as: UTF8.self))
                start = i + 1
            }
            paths = names
            var ok = names.count == docs && Int(starts[0]) == 0 && Int(starts[keyCount]) == postingCount
            for i in 0..<keyCount where ok { ok = starts[i] <= starts[i + 1] && (i == 0 || keys[i - 1] < keys[i]) }
            guard ok else {
                munmap(m, size)
                throw IndexError.corrupt("segment \(id) tables disagree")
            }
        }

        deinit { munmap(map, mapSize) }

        static func map(_ path: String) throws -> (UnsafeMutableRawPointer?, Int) {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw IndexError.io("open \(path): errno \(errno)") }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw IndexError.io("stat \(path)") }
            let size = Int(st.st_size)
            if size == 0 { return (nil, 0) }
            guard let p = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else { throw IndexError.io("mmap \(path): errno \(errno)") }
            return (p, size)
        }

        /// What the owner recorded about the document when it was indexed.
        public func stamp(_ doc: UInt32) -> Stamp {
            let e = docTable + Int(doc) * Segment.docEntrySize
            return Stamp(length: e.loadUnaligned(as: UInt64.self), modified: e.loadUnaligned(fromByteOffset: 8, as: Int64.self),
                         device: e.loadUnaligned(fromByteOffset: 16, as: UInt64.self), inode: e.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        }

        var hasCopies: Bool { copyTable != nil }

        /// The content document `doc` is a copy of, or nil when it has its own postings.
        public func contentOf(_ doc: UInt32) -> DocumentRef? {
            guard let t = copyTable, Int(doc) < documentCount, t[2 * Int(doc)] != 0 else { return nil }
            return DocumentRef(segment: Int(t[2 * Int(doc)]), doc: t[2 * Int(doc) + 1])
        }

        /// All the segment's postings: one per distinct trigram of each content document.
        var postingCount: Int { Int(starts[keys.count]) }

        /// The sorted documents holding `key`, or nil when none does.
        func postings(for key: UInt32) -> UnsafeBufferPointer<UInt32>? {
            var lo = 0, hi = keys.count
            while lo < hi { let mid = (lo + hi) / 2; if keys[mid] < key { lo = mid + 1 } else { hi = mid } }
            guard lo < keys.count, keys[lo] == key else { return nil }
            let s = Int(starts[lo]), e = Int(starts[lo + 1])
            return UnsafeBufferPointer(start: postingsBase + s, count: e - s)
        }
    }

    // MARK: Building

    /// Builds one segment: documents are added (their trigrams collected), then `finish` sorts the
    /// postings and writes the segment.
    public final class Builder {
        public private(set) var segmentID: Int
        let directory: String
        /// The summed length of the documents added with content (copies add nothing).
        public private(set) var contentBytes: UInt64 = 0
        /// Documents added, copies included.
        public private(set) var documentCount = 0
        private var docTable: [Stamp] = []
        /// Two words per document: the segment and document it is a copy of, or 0, 0.
        private var copyTable: [UInt32] = []
        private var pathBytes: [UInt8] = []
        /// (key << 32 | doc) for every distinct trigram of every document, in document order.
        private var entries: UnsafeMutablePointer<UInt64>
        private var entryCount = 0
        /// Room for a whole segment's entries and the next document's (4M, 32 MiB of address space
        /// that is touched only as it fills): growing it copies and faults in every page again.
        private var entryCapacity = 1 << 22
        /// The trigrams of the last document added, one bit per key: 256 KiB, which stays in the
        /// cache where a table of last-seen documents (8 MiB) would miss on nearly every byte.
        private let seen: UnsafeMutablePointer<UInt64>
        /// Where the last document's entries start (its bits are cleared from them).
        private var lastStart = 0
        private var finished = false
        /// The counting sort's table (all zero between segments) and its output, kept for the next segment.
        private var counts: UnsafeMutablePointer<UInt32>?
        private var postingsBuffer: UnsafeMutablePointer<UInt32>?
        private var postingsCapacity = 0

        var isFinished: Bool { finished }

        init(directory: String, id: Int) throws {
            self.directory = directory
            segmentID = id
            seen = .allocate(capacity: TrigramIndex.keySpace / 64)
            seen.initialize(repeating: 0, count: TrigramIndex.keySpace / 64)
            entries = .allocate(capacity: entryCapacity)
        }

        deinit {
            seen.deallocate()
            entries.deallocate()
            counts?.deallocate()
            postingsBuffer?.deallocate()
        }

        /// Starts a new segment in a finished builder's buffers.
        fileprivate func restart(id: Int) {
            segmentID = id
            documentCount = 0
            contentBytes = 0
            docTable.removeAll(keepingCapacity: true)
            copyTable.removeAll(keepingCapacity: true)
            pathBytes.removeAll(keepingCapacity: true)
            entryCount = 0
            lastStart = 0
            finished = false
        }

        private func append(path: String, stamp: Stamp, copyOf target: DocumentRef? = nil) -> UInt32 {
            let doc = UInt32(documentCount)
            documentCount += 1
            docTable.append(stamp)
            pathBytes.append(contentsOf: path.utf8)
            pathBytes.append(0)
            if let target {
                copyTable.append(UInt32(target.segment)); copyTable.append(target.doc)
            } else {
                copyTable.append(0); copyTable.append(0)
                contentBytes += stamp.length
            }
            return doc
        }

        /// Adds a document whose content is exactly that of `target`, a content document (not a copy)
        /// of this builder or of another segment committed with it or already live. It gets no
        /// postings: searches find it through `target`'s. `stamp.length` must be the content's length.
        @discardableResult
        public func addCopy(path: String, stamp: Stamp, of target: DocumentRef) -> DocumentRef {
            precondition(target.segment > 0 && target.segment <= Int(UInt32.max))
            clearSeen()
            return DocumentRef(segment: segmentID, doc: append(path: path, stamp: stamp, copyOf: target))
        }

        private func reserve(_ extra: Int) {
            guard entryCount + extra > entryCapacity else { return }
            var cap = entryCapacity
            while entryCount + extra > cap { cap *= 2 }
            let grown = UnsafeMutablePointer<UInt64>.allocate(capacity: cap)
            grown.moveInitialize(from: entries, count: entryCount)
            entries.deallocate()
            entries = grown
            entryCapacity = cap
        }

        /// Forgets the previous document's trigrams.
        private func clearSeen() {
            for i in lastStart..<entryCount { seen[Int(entries[i] >> 38)] = 0 }
            lastStart = entryCount
        }

        /// Adds one document; `stamp.length` is set from the content.
        @discardableResult
        public func add(path: String, content: UnsafeRawBufferPointer, stamp: Stamp = Stamp(length: 0)) -> DocumentRef {
            var st = stamp
            st.length = UInt64(content.count)
            clearSeen()
            let doc = append(path: path, stamp: st)
            let ref = DocumentRef(segment: segmentID, doc: doc)
            let n = content.count
            guard n >= 3, let p = content.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return ref }
            // At most one new entry per byte and per key, and one more for the store every step makes
            // (the next new key overwrites it).
            reserve(min(n, TrigramIndex.keySpace) + 1)
            entryCount = TrigramIndex.fold.withUnsafeBufferPointer { fold in
                kiln_trigram_entries(p, n, fold.baseAddress!, seen, entries, entryCount, doc)
            }
            return ref
        }

        /// Copies the content documents of `segment` that `liveEntries` names live paths for, postings
        /// and all, in order (compaction): the first entry becomes the content, the rest its copies.
        func merge(_ segment: Segment, liveEntries: (UInt32) -> [(String, Stamp)]) {
            clearSeen()
            var renumbered = [UInt32](repeating: .max, count: segment.documentCount)
            for doc in 0..<UInt32(segment.documentCount) {
                let live = liveEntries(doc)
                guard let first = live.first else { continue }
                let d = append(path: first.0, stamp: first.1)
                renumbered[Int(doc)] = d
                for c in live.dropFirst() { _ = append(path: c.0, stamp: c.1, copyOf: DocumentRef(segment: segmentID, doc: d)) }
            }
            reserve(Int(segment.starts[segment.keys.count]))
            for (i, key) in segment.keys.enumerated() {
                let kb = UInt64(key) << 32
                for j in Int(segment.starts[i])..<Int(segment.starts[i + 1]) {
                    let old = Int(segment.postingsBase[j])
                    guard old < renumbered.count else { continue }
                    let d = renumbered[old]
                    if d != .max { entries[entryCount] = kb | UInt64(d); entryCount += 1 }
                }
            }
            lastStart = entryCount
        }

        /// Whether the last added document holds the trigram `key`.
        public func lastDocumentContains(_ key: UInt32) -> Bool { seen[Int(key >> 6)] & (UInt64(1) << UInt64(key & 63)) != 0 }

        static func writeAll(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) throws {
            var done = 0
            while done < n {
                let w = write(fd, p + done, n - done)
                if w < 0 { if errno == EINTR { continue }; throw IndexError.io("write: errno \(errno)") }
                done += w
            }
        }

        /// Sorts the postings by key (a counting sort: documents stay in order within a key) and
        /// writes the segment.
        public func finish() throws {
            clearSeen()
            finished = true
            // The counts stay zero between segments: only the keys used are reset at the end.
            let counts: UnsafeMutablePointer<UInt32>
            if let c = self.counts { counts = c } else {
                counts = .allocate(capacity: TrigramIndex.keySpace)
                counts.initialize(repeating: 0, count: TrigramIndex.keySpace)
                self.counts = counts
            }
            let n = entryCount
            kiln_postings_count(entries, n, counts)
            var keys: [UInt32] = []
            var starts: [UInt32] = []
            var running: UInt32 = 0
            // Most keys are unused: eight counters at a time are skipped while all are zero.
            let words = UnsafeRawPointer(counts).assumingMemoryBound(to: UInt64.self)
            var w = 0
            while w < TrigramIndex.keySpace / 2 {
                if words[w] | words[w + 1] | words[w + 2] | words[w + 3] == 0 { w += 4; continue }
                for k in (w * 2)..<(w * 2 + 8) where counts[k] > 0 {
                    keys.append(UInt32(k))
                    starts.append(running)
                    let c = counts[k]
                    counts[k] = running
                    running += c
                }
                w += 4
            }
            starts.append(running)
            // The postings buffer is kept for the next segment (a fresh one would fault in every page).
            if postingsBuffer == nil || postingsCapacity < n {
                postingsBuffer?.deallocate()
                postingsCapacity = max(n, 1, postingsCapacity * 2)
                postingsBuffer = .allocate(capacity: postingsCapacity)
            }
            let postings = postingsBuffer!
            kiln_postings_scatter(entries, n, counts, postings)
            for k in keys { counts[Int(k)] = 0 }
            entryCount = 0; lastStart = 0
            var header = [UInt8](repeating: 0, count: Segment.headerSize)
            header.withUnsafeMutableBytes { h in
                h.storeBytes(of: Segment.magic, toByteOffset: 0, as: UInt32.self)
                h.storeBytes(of: Segment.version, toByteOffset: 4, as: UInt32.self)
                h.storeBytes(of: UInt32(documentCount), toByteOffset: 8, as: UInt32.self)
                h.storeBytes(of: UInt32(keys.count), toByteOffset: 12, as: UInt32.self)
                h.storeBytes(of: UInt64(n), toByteOffset: 16, as: UInt64.self)
                h.storeBytes(of: UInt64(pathBytes.count), toByteOffset: 24, as: UInt64.self)
            }
            var table = [UInt64]()
            table.reserveCapacity(docTable.count * 4)
            for d in docTable {
                table.append(d.length); table.append(UInt64(bitPattern: d.modified)); table.append(d.device); table.append(d.inode)
            }
            let path = directory + "/\(segmentID).idx"
            let out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            guard out >= 0 else { throw IndexError.io("create segment \(segmentID): errno \(errno)") }
            defer { close(out) }
            do {
                try header.withUnsafeBytes { try Builder.writeAll(out, $0.baseAddress!, $0.count) }
                if !table.isEmpty { try table.withUnsafeBytes { try Builder.writeAll(out, $0.baseAddress!, $0.count) } }
                if !copyTable.isEmpty { try copyTable.withUnsafeBytes { try Builder.writeAll(out, $0.baseAddress!, $0.count) } }
                if !keys.isEmpty { try keys.withUnsafeBytes { try Builder.writeAll(out, $0.baseAddress!, $0.count) } }
                try starts.withUnsafeBytes { try Builder.writeAll(out, $0.baseAddress!, $0.count) }
                if n > 0 { try Builder.writeAll(out, postings, n * 4) }
                if !pathBytes.isEmpty { try pathBytes.withUnsafeBytes { try Builder.writeAll(out, $0.baseAddress!, $0.count) } }
            } catch {
                unlink(path)
                throw error
            }
        }

        /// Drops a segment that will not be committed.
        public func discard() {
            clearSeen()
            entryCount = 0; lastStart = 0
            finished = true
            unlink(directory + "/\(segmentID).idx")
        }
    }
}

/// A first-come first-served lock for async code (a writer holds it across suspension points).
final class AsyncGate: Sendable {
    private let state = Mutex<(busy: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func acquire() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if !s.busy { s.busy = true; return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty { s.busy = false; return nil }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}
