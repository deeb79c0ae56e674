import CShims
import Foundation
import Glibc
import Synchronization

/// Reading: snapshots of the live documents, their stamps, and the memory-mapped segments.
extension TrigramIndex {
    // MARK: Reading

    public struct Snapshot: Sendable {
        public let segments: [Segment]
        let dead: [Int: Set<UInt32>]
        let copies: [DocumentRef: [DocumentRef]]
        let byID: [Int: Segment]

        init(segments: [Segment], dead: [Int: Set<UInt32>], copies: [DocumentRef: [DocumentRef]]) {
            self.segments = segments
            self.dead = dead
            self.copies = copies
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
                    for doc in 0..<UInt32(seg.documentCount) where !d.contains(doc) {
                        if try !body(seg, doc) { return }
                    }
                    continue
                }
                var lists: [UnsafeBufferPointer<UInt32>] = []
                var missing = false
                for k in keys {
                    guard let l = seg.postings(for: k) else {
                        missing = true
                        break
                    }
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
                while hi < n && b[hi] < x {
                    j = hi + 1
                    hi = j + step
                    step <<= 1
                }
                hi = min(hi, n)
                var lo = j
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if b[mid] < x { lo = mid + 1 } else { hi = mid }
                }
                j = lo
                if j == n { break }
                if b[j] == x {
                    out.append(x)
                    j += 1
                }
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
            self.length = length
            self.modified = modified
            self.device = device
            self.inode = inode
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
        let keys: UnsafeBufferPointer<UInt32>
        let starts: UnsafePointer<UInt32>
        let postingsBase: UnsafePointer<UInt32>

        static let magic: UInt32 = 0x3249_544B  // "KTI2"
        /// 3: a copy table follows the document table.
        static let version: UInt32 = 3
        static let headerSize = 32
        static let docEntrySize = 32

        init(directory: String, id: Int) throws {
            self.id = id
            let (m, size) = try Segment.map(directory + "/\(id).idx")
            guard let m, size >= Segment.headerSize else { throw IndexError.corrupt("segment \(id) has no header") }
            map = m
            mapSize = size
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
            guard h.load(as: UInt32.self) == Segment.magic, version == 2 || version == 3,
                postingCount < Int(UInt32.max), pathOff + pathBytes == size
            else {
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
            guard let p = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
                throw IndexError.io("mmap \(path): errno \(errno)")
            }
            return (p, size)
        }

        /// What the owner recorded about the document when it was indexed.
        public func stamp(_ doc: UInt32) -> Stamp {
            let e = docTable + Int(doc) * Segment.docEntrySize
            return Stamp(
                length: e.loadUnaligned(as: UInt64.self), modified: e.loadUnaligned(fromByteOffset: 8, as: Int64.self),
                device: e.loadUnaligned(fromByteOffset: 16, as: UInt64.self),
                inode: e.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
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
            var lo = 0
            var hi = keys.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if keys[mid] < key { lo = mid + 1 } else { hi = mid }
            }
            guard lo < keys.count, keys[lo] == key else { return nil }
            let s = Int(starts[lo])
            let e = Int(starts[lo + 1])
            return UnsafeBufferPointer(start: postingsBase + s, count: e - s)
        }
    }
}
