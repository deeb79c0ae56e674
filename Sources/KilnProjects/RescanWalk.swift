import CShims
import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization

/// What the database knows of a file from the last rescan.
struct StoredFile: Sendable {
    let size: Int
    let mtime: Int64
    let hash: String?
    let binary: Bool
}

/// The first stage of a rescan, on a thread of its own: lists the files (git's view, or the built-in
/// walk as it goes), stats those it knows (and symlinks, and whatever git lists), and feeds those
/// that must be read to the queue, so reading starts with the first directory rather than after the
/// last. Unchanged files are only counted.
final class RescanWalk: @unchecked Sendable {
    let root: String
    let stored: [String: StoredFile]
    /// Paths the trigram index holds.
    let live: Set<String>
    let symbolsComplete: Bool
    /// Whether the readers open new files beneath the root (so the walk need not stat them).
    let beneath: Bool
    let queue: RescanShared<RescanItem>
    /// The stored files the walk found (the others are gone); only those, so the first index of a
    /// tree hashes no path here.
    private(set) var seen = Set<String>()
    /// Unchanged text files whose symbols must be extracted again (the symbol table was lost).
    private(set) var reextract: [SymbolItem] = []
    private(set) var duration: UInt64 = 0

    init(
        root: String, stored: [String: StoredFile], live: Set<String>, symbolsComplete: Bool, beneath: Bool,
        queue: RescanShared<RescanItem>
    ) {
        self.root = root
        self.stored = stored
        self.live = live
        self.symbolsComplete = symbolsComplete
        self.beneath = beneath
        self.queue = queue
        seen.reserveCapacity(stored.count)
    }

    /// Walks `listed` (git's list) or the tree itself, then closes the queue.
    func run(_ listed: [String]?) {
        let start = kilnMonotonicNanos()
        var batch: [RescanItem] = []
        var seenCount = 0
        var skipped = 0
        var unchanged = 0
        func flush() {
            queue.push(batch)
            batch.removeAll(keepingCapacity: true)
            let c = (seenCount, skipped, unchanged)
            queue.stats.withLock {
                $0.filesSeen += c.0
                $0.skipped += c.1
                $0.unchanged += c.2
            }
            (seenCount, skipped, unchanged) = (0, 0, 0)
        }
        let visit = { [self] (path: String, walked: WalkedFile?) -> Bool in
            seenCount += 1
            if let item = consider(path, walked, &skipped, &unchanged) { batch.append(item) }
            if seenCount % 256 == 0 {
                flush()
                if queue.isStopped { return false }
            }
            return true
        }
        if let listed {
            for path in listed where !visit(path, nil) { break }
        } else {
            ProjectService.walk(root) { visit($0, $1) }
        }
        flush()
        duration = kilnMonotonicNanos() - start
        queue.close()
    }

    /// The item to read for one listed file, or nil when it is gone, not a regular file, or unchanged.
    /// `walked` is the file as the walk found it (git's list gives none).
    private func consider(
        _ path: String, _ walked: WalkedFile?, _ skipped: inout Int, _ unchanged: inout Int
    ) -> RescanItem? {
        let old = stored[path]
        if old != nil { seen.insert(path) }
        let full = root + "/" + path
        // A new file the walk found regular needs no stat (nothing to compare it with): the reader
        // opens it beneath the root. What git lists may be anything, so it is looked at first.
        if old == nil, beneath, let walked, walked.isRegular {
            return RescanItem(path: path, full: full, device: 0, inode: 0, oldHash: nil, known: false, beneath: true)
        }
        var st = stat()
        var target = full
        if let walked {
            guard walked.lstat(&st) else {
                skipped += 1
                return nil
            }
        } else {
            guard lstat(full, &st) == 0 else {
                skipped += 1
                return nil
            }
        }
        if (st.st_mode & S_IFMT) == S_IFLNK {
            // A symlink is indexed as its target only when that stays inside the project.
            guard let real = SafePath.real(full), SafePath.isInside(real, root: root), stat(real, &st) == 0 else {
                skipped += 1
                return nil
            }
            target = real
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            skipped += 1
            return nil
        }
        let size = Int(st.st_size)
        let mtime = modificationNanos(st)
        // A text file the index no longer holds (a reset index) is read again even if unchanged.
        let lost = old.map { !$0.binary && $0.hash != nil && !live.contains(path) } ?? false
        if let old, old.size == size, old.mtime == mtime, !lost {
            unchanged += 1
            if !symbolsComplete, !old.binary, old.hash != nil, let language = SymbolExtractor.language(of: path) {
                reextract.append(
                    SymbolItem(
                        path: path, full: target, device: UInt64(st.st_dev), inode: UInt64(st.st_ino),
                        language: language))
            }
            return nil
        }
        return RescanItem(
            path: path, full: target, device: UInt64(st.st_dev), inode: UInt64(st.st_ino),
            oldHash: lost ? nil : old?.hash, known: old != nil)
    }
}
