import CShims
import Foundation
import Glibc
import KilnHTTP

/// Reading and replacing files beneath a project folder through no symlink at all, the way the
/// file route reads: the folder is opened with openat2 (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
/// and the file is opened, created or renamed relative to that open folder, so a folder swapped
/// for a link by a process in the sandbox after a check cannot lead the write out. Where openat2
/// is missing, paths are checked as `SafePath.resolve` does.
extension SafePath {
    /// The bytes of `relative` beneath `root` (nil: there is no such file); 400 for a folder, 403
    /// for a symlink on the way, 413 past `max` bytes.
    public static func readBeneath(root: String, relative: String, max: Int) throws -> [UInt8]? {
        let parent: Int32?
        let name: String
        do {
            (parent, name) = try openParent(root: root, relative: relative, create: false)
        } catch let e as HTTPError where e.status == .notFound {
            return nil  // a folder on the way is missing: so is the file
        }
        guard let parent else { return try readByPath(root: root, relative: relative, max: max) }
        defer { close(parent) }
        let fd = openBeneath(parent, name, flags: O_RDONLY | O_NOCTTY | O_NONBLOCK)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw refusal(errno, relative)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw APIError.validation("\(relative) is not a file", field: "path")
        }
        guard Int(st.st_size) <= max else { throw HTTPError(.payloadTooLarge, message: "\(relative) is too large") }
        let size = Int(st.st_size)
        var out = [UInt8](repeating: 0, count: size)
        var off = 0
        while off < size {
            let n = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + off, size - off) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            off += n
        }
        return Array(out[0..<off])
    }

    /// Replaces (or creates) `relative` beneath `root` with `bytes`: a temporary file in the same
    /// folder, renamed over the old one, which keeps its mode. `createFolders` makes missing folders.
    public static func writeBeneath(root: String, relative: String, bytes: [UInt8], createFolders: Bool) throws {
        let (parentFD, name) = try openParent(root: root, relative: relative, create: createFolders)
        guard let parent = parentFD else {
            let path = try resolveForCreate(root: root, relative: relative)
            guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
                throw APIError.unavailable("cannot write \(relative)")
            }
            return
        }
        defer { close(parent) }
        var st = stat()
        var mode: mode_t = 0o644
        if fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFREG else {
                throw (st.st_mode & S_IFMT) == S_IFLNK
                    ? APIError.forbidden("\(relative) is a symlink; Kiln does not write through links")
                    : APIError.validation("\(relative) is not a file", field: "path")
            }
            mode = st.st_mode & 0o7777
        }
        let tmp = "." + String(name.prefix(100)) + ".kiln-tmp-" + IDs.randomBase62(8)
        let fd = openat(parent, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else {
            throw APIError.unavailable("cannot write \(relative): \(String(cString: strerror(errno)))")
        }
        var off = 0
        var failed = false
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, bytes.count - off) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                failed = true
                break
            }
            off += n
        }
        fchmod(fd, mode)
        close(fd)
        guard !failed, renameat(parent, tmp, parent, name) == 0 else {
            unlinkat(parent, tmp, 0)
            throw APIError.unavailable("cannot replace \(relative)")
        }
    }

    /// Removes the file `relative` beneath `root` (not a folder; a missing one is fine).
    public static func removeBeneath(root: String, relative: String) throws {
        let (parentFD, name) = try openParent(root: root, relative: relative, create: false)
        guard let parent = parentFD else {
            if let path = try? resolveForCreate(root: root, relative: relative) { unlink(path) }
            return
        }
        defer { close(parent) }
        if unlinkat(parent, name, 0) != 0 && errno != ENOENT { throw refusal(errno, relative) }
    }

    /// The folder holding `relative`, opened beneath `root` through no symlink (nil without
    /// openat2), and the file's own name. `create` makes missing folders on the way.
    static func openParent(root: String, relative: String, create: Bool) throws -> (Int32?, String) {
        let segs = try segments(relative)
        guard let name = segs.last else { throw APIError.validation("path names no file", field: "path") }
        let rootFD = openRoot(root)
        guard rootFD >= 0 else { return (nil, name) }
        var dir = rootFD
        for seg in segs.dropLast() {
            var next = openBeneath(dir, seg, flags: O_RDONLY | O_DIRECTORY)
            if next < 0 && errno == ENOENT && create {
                guard mkdirat(dir, seg, 0o755) == 0 || errno == EEXIST else {
                    close(dir)
                    throw APIError.unavailable("cannot create folder \(seg)")
                }
                next = openBeneath(dir, seg, flags: O_RDONLY | O_DIRECTORY)
            }
            let e = errno
            close(dir)
            guard next >= 0 else {
                throw e == ENOENT ? APIError.notFound("No such folder in \(relative)") : refusal(e, relative)
            }
            dir = next
        }
        return (dir, name)
    }

    static func refusal(_ e: Int32, _ relative: String) -> HTTPError {
        switch e {
        case ELOOP, EXDEV: APIError.forbidden("\(relative) leads through a symlink; Kiln does not follow links here")
        case ENOTDIR: APIError.validation("a part of \(relative) is not a folder", field: "path")
        case EISDIR: APIError.validation("\(relative) is a folder", field: "path")
        default: APIError.unavailable("cannot open \(relative): \(String(cString: strerror(e)))")
        }
    }

    static func readByPath(root: String, relative: String, max: Int) throws -> [UInt8]? {
        guard let path = try? resolve(root: root, relative: relative) else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw APIError.validation("\(relative) is not a file", field: "path")
        }
        guard data.count <= max else { throw HTTPError(.payloadTooLarge, message: "\(relative) is too large") }
        return Array(data)
    }
}
