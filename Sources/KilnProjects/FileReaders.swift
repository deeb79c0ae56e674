import Foundation
import Glibc
import KilnCore
import KilnHTTP
import KilnStore

/// A reusable buffer that whole files are read into: grown as needed, freed with its owner. The
/// bytes a read returns are valid until the next read.
final class ReadBuffer {
    private var buffer: UnsafeMutableRawPointer
    private var capacity = 1 << 20

    init() { buffer = .allocate(byteCount: capacity, alignment: 16) }
    deinit { buffer.deallocate() }

    /// Up to `size` bytes of `fd` from where it stands (fewer if the file shrank meanwhile).
    func read(_ fd: Int32, size: Int) -> UnsafeRawBufferPointer {
        if size > capacity {
            buffer.deallocate()
            capacity = max(size, capacity * 2)
            buffer = .allocate(byteCount: capacity, alignment: 16)
        }
        var n = 0
        while n < size {
            let r = Glibc.read(fd, buffer + n, size - n)
            if r < 0 && errno == EINTR { continue }
            if r <= 0 { break }
            n += r
        }
        return UnsafeRawBufferPointer(start: buffer, count: n)
    }
}

/// Reads a file the walk saw: nil unless it still is that regular file (no symlink swapped in
/// since).
struct FileSlurper {
    private let buffer = ReadBuffer()

    /// (stat, bytes); bytes nil when the file is larger than `limit`.
    func read(_ full: String, device: UInt64, inode: UInt64, limit: Int) -> (stat, UnsafeRawBufferPointer?)? {
        let fd = open(full, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return contents(fd, limit: limit) { UInt64($0.st_dev) == device && UInt64($0.st_ino) == inode }
    }

    /// The same for a file the walk did not stat: `path` relative to the open folder `dirFD`, opened
    /// beneath it through no symlink; nil unless it is a regular file.
    func read(beneath dirFD: Int32, _ path: String, limit: Int) -> (stat, UnsafeRawBufferPointer?)? {
        let fd = SafePath.openBeneath(dirFD, path, flags: O_RDONLY | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return contents(fd, limit: limit) { _ in true }
    }

    private func contents(_ fd: Int32, limit: Int, _ isExpected: (stat) -> Bool) -> (stat, UnsafeRawBufferPointer?)? {
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, isExpected(st) else { return nil }
        let size = Int(st.st_size)
        if size > limit { return (st, nil) }
        return (st, buffer.read(fd, size: size))
    }
}

/// Reads the files the search index describes, to verify candidates (the index keeps no copy of
/// the content). A file is read when it still is the one indexed (same device and inode), or, when
/// it was replaced since, when the file actually opened lies inside the project.
struct IndexedFileReader {
    let root: String
    private let buffer = ReadBuffer()

    init(root: String) { self.root = root }

    func read(_ path: String, _ stamp: TrigramIndex.Stamp) -> UnsafeRawBufferPointer? {
        // Symlinks are followed: a symlinked file was indexed as its target, inside the project.
        let fd = open(root + "/" + path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        if UInt64(st.st_dev) != stamp.device || UInt64(st.st_ino) != stamp.inode {
            // Which file the descriptor really is, not what the path names now.
            guard let real = Self.pathOf(fd), SafePath.isInside(real, root: root) else { return nil }
        }
        let size = Int(st.st_size)
        guard size <= ProjectService.maxIndexBytes else { return nil }
        return buffer.read(fd, size: size)
    }

    static func pathOf(_ fd: Int32) -> String? {
        var out = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/fd/\(fd)", &out, out.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: out[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
