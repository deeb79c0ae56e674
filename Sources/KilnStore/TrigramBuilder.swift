import CShims
import Foundation
import Glibc
import Synchronization

/// Building: the postings of new documents, counted and sorted in memory, written as a segment.
extension TrigramIndex {
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
        func restart(id: Int) {
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
                copyTable.append(UInt32(target.segment))
                copyTable.append(target.doc)
            } else {
                copyTable.append(0)
                copyTable.append(0)
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
                for c in live.dropFirst() {
                    _ = append(path: c.0, stamp: c.1, copyOf: DocumentRef(segment: segmentID, doc: d))
                }
            }
            reserve(Int(segment.starts[segment.keys.count]))
            for (i, key) in segment.keys.enumerated() {
                let kb = UInt64(key) << 32
                for j in Int(segment.starts[i])..<Int(segment.starts[i + 1]) {
                    let old = Int(segment.postingsBase[j])
                    guard old < renumbered.count else { continue }
                    let d = renumbered[old]
                    if d != .max {
                        entries[entryCount] = kb | UInt64(d)
                        entryCount += 1
                    }
                }
            }
            lastStart = entryCount
        }

        /// Whether the last added document holds the trigram `key`.
        public func lastDocumentContains(_ key: UInt32) -> Bool {
            seen[Int(key >> 6)] & (UInt64(1) << UInt64(key & 63)) != 0
        }

        static func writeAll(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) throws {
            var done = 0
            while done < n {
                let w = write(fd, p + done, n - done)
                if w < 0 {
                    if errno == EINTR { continue }
                    throw IndexError.io("write: errno \(errno)")
                }
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
            if let c = self.counts {
                counts = c
            } else {
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
                if words[w] | words[w + 1] | words[w + 2] | words[w + 3] == 0 {
                    w += 4
                    continue
                }
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
            entryCount = 0
            lastStart = 0
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
                table.append(d.length)
                table.append(UInt64(bitPattern: d.modified))
                table.append(d.device)
                table.append(d.inode)
            }
            let path = directory + "/\(segmentID).idx"
            let out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            guard out >= 0 else { throw IndexError.io("create segment \(segmentID): errno \(errno)") }
            defer { close(out) }
            do {
                try header.withUnsafeBytes { try Builder.writeAll(out, $0.baseAddress!, $0.count) }
                if !table.isEmpty { try table.withUnsafeBytes { try Builder.writeAll(out, $0.baseAddress!, $0.count) } }
                if !copyTable.isEmpty {
                    try copyTable.withUnsafeBytes { try Builder.writeAll(out, $0.baseAddress!, $0.count) }
                }
                if !keys.isEmpty { try keys.withUnsafeBytes { try Builder.writeAll(out, $0.baseAddress!, $0.count) } }
                try starts.withUnsafeBytes { try Builder.writeAll(out, $0.baseAddress!, $0.count) }
                if n > 0 { try Builder.writeAll(out, postings, n * 4) }
                if !pathBytes.isEmpty {
                    try pathBytes.withUnsafeBytes { try Builder.writeAll(out, $0.baseAddress!, $0.count) }
                }
            } catch {
                unlink(path)
                throw error
            }
        }

        /// Drops a segment that will not be committed.
        public func discard() {
            clearSeen()
            entryCount = 0
            lastStart = 0
            finished = true
            unlink(directory + "/\(segmentID).idx")
        }
    }
}
