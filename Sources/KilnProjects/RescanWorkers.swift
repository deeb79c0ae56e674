import CShims
import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization

/// A file's mtime in nanoseconds (what the index stores to notice changes).
func modificationNanos(_ st: stat) -> Int64 { Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec) }

/// A file the walk found, valid while it is visited: its folder (open) and name, and whether the
/// folder listed it as a regular file (else a symlink).
struct WalkedFile {
    let directory: Int32
    let name: String
    let isRegular: Bool

    /// The file's lstat, relative to its folder (the kernel does not look the whole path up again).
    func lstat(_ st: inout stat) -> Bool { fstatat(directory, name, &st, AT_SYMLINK_NOFOLLOW) == 0 }
}

/// A file a rescan must read: new, or its size or mtime changed.
struct RescanItem: Sendable {
    let path: String
    /// The file to read: the real path when `path` is a symlink (opened without following links).
    let full: String
    let device: UInt64
    let inode: UInt64
    let oldHash: String?
    let known: Bool
    /// A new regular file the walk did not stat: the reader opens it beneath the project's folder
    /// (through no symlink) and takes its device and inode from the open file.
    var beneath = false
    var file: FileToRead { FileToRead(path: path, full: full, device: device, inode: inode) }

    /// The item with the identity of the file the reader opened.
    func identified(_ st: stat) -> RescanItem {
        RescanItem(
            path: path, full: full, device: UInt64(st.st_dev), inode: UInt64(st.st_ino), oldHash: oldHash, known: known)
    }
}

/// What reading one file produced.
struct RescanResult: Sendable {
    let file: FileToRead
    var path: String { file.path }
    let size: Int
    let mtime: Int64
    let hash: String?
    let binary: Bool
    /// The findings anchors whose trigrams the text holds (`Findings.anchorMask`).
    var anchors: UInt32 = 0
    /// False when the content hash matched the stored one (only size and mtime are updated).
    let contentChanged: Bool
    /// Whether the file was known before (its old rows need deleting).
    let known: Bool
    /// Indexed as a copy of another file's content: its findings are that file's.
    var copy = false
}

/// A file of the same content as one read before it in the same rescan (`content`): the second pass
/// gives it that file's findings, and its symbols too when `symbolsReused` (both are read the same
/// way, in the same language), instead of reading it again.
struct RescanCopy: Sendable {
    let file: FileToRead
    let length: Int
    let anchors: UInt32
    let language: String?
    let symbolsReused: Bool
    let content: RescanContents.Entry
}

/// A file as the walk found it: its path in the project, the path to open (a symlink's target) and
/// the identity it had (a file replaced since is not read).
struct FileToRead: Sendable {
    let path: String
    let full: String
    let device: UInt64
    let inode: UInt64
}

/// A file whose symbols the second pass extracts (it was indexed as text, in a language we read).
struct SymbolItem: Sendable {
    let path: String
    let full: String
    let device: UInt64
    let inode: UInt64
    let language: String
}

/// State the rescan threads share: a work queue that may still be filling (the walk feeds it while
/// the readers drain it), counters, a stop flag.
final class RescanShared<Item: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Item]
    private var cursor = 0
    private var closed: Bool
    /// Time the takers spent waiting for items (the walk was behind), for the rescan log.
    private var waited: UInt64 = 0
    var waitedNanos: UInt64 {
        condition.lock()
        defer { condition.unlock() }
        return waited
    }
    let stats: Mutex<RescanStats>
    private let stopFlag = Mutex(false)

    /// A queue holding `items`; `open` ones take more with `push` until `close`.
    init(items: [Item] = [], open: Bool = false, stats: RescanStats) {
        self.items = items
        closed = !open
        self.stats = Mutex(stats)
    }

    var isStopped: Bool { stopFlag.withLock { $0 } }

    func push(_ batch: [Item]) {
        guard !batch.isEmpty else { return }
        condition.lock()
        items += batch
        condition.broadcast()
        condition.unlock()
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    /// Ends the work early (cancelled, or a thread failed): every waiting thread returns.
    func stop() {
        stopFlag.withLock { $0 = true }
        close()
    }

    /// The next item, waiting while the queue is open and empty; nil when it is done or stopped.
    func next() -> Item? {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if isStopped { return nil }
            if cursor < items.count {
                defer { cursor += 1 }
                return items[cursor]
            }
            if closed { return nil }
            let t0 = kilnMonotonicNanos()
            condition.wait()
            waited += kilnMonotonicNanos() - t0
        }
    }
}

/// Runs `work(i)` for i in 0..<count, each on a thread of its own, and waits for all. Not Dispatch's
/// global queues: the async request handlers share those, and a long rescan would starve them.
func onThreads(_ count: Int, stop: @escaping @Sendable () -> Void, _ work: @escaping @Sendable (Int) -> Void) async {
    await withTaskCancellationHandler {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let remaining = Mutex(count)
            for i in 0..<count {
                Thread.detachNewThread {
                    work(i)
                    if remaining.withLock({
                        $0 -= 1
                        return $0 == 0
                    }) {
                        done.resume()
                    }
                }
            }
        }
    } onCancel: {
        stop()
    }
}

/// The contents indexed so far in one rescan, by keyed hash and length, shared by its threads: a file
/// whose content is already there (a vendored copy, a second version of a package) becomes a copy
/// of that document instead of being indexed again.
final class RescanContents: Sendable {
    struct Key: Hashable {
        let hash: UInt64
        let length: Int
    }
    /// The first file read with this content: its document, anchors, symbol language and the
    /// modification time it had (a copy's symbols and findings are its, while it stays so).
    struct Entry: Sendable {
        let document: TrigramIndex.DocumentRef
        let anchors: UInt32
        let file: FileToRead
        let mtime: Int64
        let language: String?

        /// Whether the file is still the one read (same identity and modification time), checked after
        /// the second pass has read it again.
        func unchanged(length: Int) -> Bool {
            var st = stat()
            return lstat(file.full, &st) == 0 && UInt64(st.st_dev) == file.device && UInt64(st.st_ino) == file.inode
                && Int(st.st_size) == length && modificationNanos(st) == mtime
        }
    }
    private let entries = Mutex<[Key: Entry]>([:])

    func find(_ key: Key) -> Entry? { entries.withLock { $0[key] } }
    func add(_ key: Key, _ entry: Entry) { entries.withLock { if $0[key] == nil { $0[key] = entry } } }
}

/// One indexing thread: reads files, hashes them and adds text to its own index segment (a new one
/// every `segmentBytes`), content seen before in this rescan as a copy. Findings and symbols wait
/// for the second pass.
final class RescanWorker: @unchecked Sendable {
    let shared: RescanShared<RescanItem>
    let index: TrigramIndex
    let contents: RescanContents
    var builder: TrigramIndex.Builder?
    var built: [Int] = []
    var results: [RescanResult] = []
    var symbolItems: [SymbolItem] = []
    var copies: [RescanCopy] = []
    var error: (any Error)?
    private let file = FileSlurper()
    /// The project's folder, open: where `beneath` items are opened from.
    let rootFD: Int32

    init(_ shared: RescanShared<RescanItem>, index: TrigramIndex, contents: RescanContents, rootFD: Int32) {
        self.shared = shared
        self.index = index
        self.contents = contents
        self.rootFD = rootFD
    }

    func run() {
        do {
            while let item = shared.next() { try process(item) }
            if let b = builder {
                if b.documentCount > 0 {
                    try b.finish()
                    built.append(b.segmentID)
                } else {
                    b.discard()
                }
                builder = nil
            }
        } catch {
            self.error = error
            shared.stop()
            builder?.discard()
            builder = nil
        }
    }

    private func process(_ walked: RescanItem) throws {
        let opened =
            walked.beneath
            ? file.read(beneath: rootFD, walked.path, limit: ProjectService.maxIndexBytes)
            : file.read(walked.full, device: walked.device, inode: walked.inode, limit: ProjectService.maxIndexBytes)
        guard let (st, content) = opened else {
            shared.stats.withLock { $0.skipped += 1 }
            return
        }
        let item = walked.beneath ? walked.identified(st) : walked
        let mtime = modificationNanos(st)
        guard let bytes = content else {
            results.append(
                RescanResult(
                    file: item.file, size: Int(st.st_size), mtime: mtime, hash: nil, binary: false,
                    contentChanged: true, known: item.known))
            shared.stats.withLock { $0.skipped += 1 }
            return
        }
        let n = bytes.count
        // XXH64 keyed with the index's secret seed: ten times SHA-256's speed, and a collision
        // (which would keep stale postings) cannot be aimed for without the seed.
        let h64 = XXH64.hash(bytes, seed: index.contentSeed)
        let hash = "x64:" + XXH64.hex(h64)
        if hash == item.oldHash {
            results.append(
                RescanResult(
                    file: item.file, size: n, mtime: mtime, hash: hash, binary: false,
                    contentChanged: false, known: true))
            shared.stats.withLock { $0.unchanged += 1 }
            return
        }
        // The same hash (keyed with a secret seed) and length: the same content, text like the first.
        let key = RescanContents.Key(hash: h64, length: n)
        let known = contents.find(key)
        let text = known != nil || (!Bytes.contains(bytes, 0) && Bytes.isValidUTF8(bytes))
        var anchors: UInt32 = 0
        if text {
            if let b = builder, b.contentBytes >= ProjectService.segmentBytes {
                try b.finish()
                built.append(b.segmentID)
                builder = try index.makeBuilder(reusing: b)
            }
            let b = try builder ?? index.makeBuilder()
            builder = b
            let stamp = TrigramIndex.Stamp(length: UInt64(n), modified: mtime, device: item.device, inode: item.inode)
            let language = SymbolExtractor.language(of: item.path)
            var extract = language != nil
            if let known {
                b.addCopy(path: item.path, stamp: stamp, of: known.document)
                anchors = known.anchors
                // The same extension, not only the same language: ctags parses `.h` as C++, `.c` as C.
                let reuse =
                    language != nil && language == known.language
                    && SymbolExtractor.fileExtension(of: item.path)
                        == SymbolExtractor.fileExtension(of: known.file.path)
                    && ProjectService.ctagsCanTake(item.path) == ProjectService.ctagsCanTake(known.file.path)
                copies.append(
                    RescanCopy(
                        file: item.file, length: n, anchors: anchors, language: language, symbolsReused: reuse,
                        content: known))
                extract = !reuse
                shared.stats.withLock { $0.copies += 1 }
            } else {
                let document = b.add(path: item.path, content: bytes, stamp: stamp)
                anchors = Findings.anchorMask(contains: b.lastDocumentContains)
                contents.add(
                    key, .init(document: document, anchors: anchors, file: item.file, mtime: mtime, language: language))
            }
            if extract, let language {
                symbolItems.append(
                    SymbolItem(
                        path: item.path, full: item.full, device: item.device, inode: item.inode, language: language))
            }
        }
        results.append(
            RescanResult(
                file: item.file, size: n, mtime: mtime, hash: hash, binary: !text, anchors: anchors,
                contentChanged: true, known: item.known, copy: known != nil))
        shared.stats.withLock {
            $0.indexed += 1
            $0.bytes += n
        }
    }
}

/// One symbol thread of the second pass: the built-in extractor over the files it is given.
final class SymbolWorker: @unchecked Sendable {
    let shared: RescanShared<SymbolItem>
    var symbols = SymbolBatch()
    private let file = FileSlurper()

    init(_ shared: RescanShared<SymbolItem>) { self.shared = shared }

    func run() {
        while let item = shared.next() {
            guard
                let (_, content) = file.read(
                    item.full, device: item.device, inode: item.inode, limit: ProjectService.maxIndexBytes),
                let bytes = content
            else { continue }
            symbols.add(contentsOf: SymbolExtractor.extract(path: item.path, bytes: bytes))
        }
    }
}

/// One findings thread of the second pass: reads the files that hold some anchor and runs the rules.
final class FindingsWorker: @unchecked Sendable {
    let shared: RescanShared<(FileToRead, UInt32)>
    var findings: [String: [Finding]] = [:]
    private let file = FileSlurper()

    init(_ shared: RescanShared<(FileToRead, UInt32)>) { self.shared = shared }

    func run() {
        while let (item, mask) = shared.next() {
            guard
                let (_, content) = file.read(
                    item.full, device: item.device, inode: item.inode, limit: ProjectService.maxIndexBytes),
                let bytes = content
            else { continue }
            let found = Findings.scan(path: item.path, content: bytes, anchorMask: mask)
            if !found.isEmpty { findings[item.path, default: []] += found }
        }
    }
}
