import CShims
import Foundation
import Glibc
import KilnHTTP

/// Resolves client-given relative paths inside a root directory, refusing what could leave it:
/// absolute paths, NUL bytes, `..` segments (400) and symlinks that lead outside (403).
public enum SafePath {
    /// The real (symlink-free) absolute path of `path`, if it exists.
    public static func real(_ path: String) -> String? {
        guard let r = realpath(path, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }

    /// True when `path` is `root` or below it (both real paths).
    public static func isInside(_ path: String, root: String) -> Bool {
        path == root || path.hasPrefix(root.hasSuffix("/") ? root : root + "/")
    }

    /// Normalised relative segments of a client path ("" or "." is the root itself).
    public static func segments(_ relative: String, field: String = "path") throws -> [String] {
        guard !relative.utf8.contains(0) else {
            throw APIError.validation("\(field) may not contain NUL bytes", field: field)
        }
        guard !relative.hasPrefix("/") else {
            throw APIError.validation("\(field) must be relative to the project", field: field)
        }
        guard relative.utf8.count <= 4096 else { throw APIError.validation("\(field) is too long", field: field) }
        var out: [String] = []
        for seg in relative.split(separator: "/", omittingEmptySubsequences: true) {
            if seg == "." { continue }
            if seg == ".." { throw APIError.validation("\(field) may not contain '..'", field: field) }
            out.append(String(seg))
        }
        return out
    }

    /// The real path of an existing entry inside `root`: 400/403/404 as above.
    public static func resolve(root: String, relative: String, field: String = "path") throws -> String {
        let segs = try segments(relative, field: field)
        let candidate = segs.isEmpty ? root : root + "/" + segs.joined(separator: "/")
        var st = stat()
        guard lstat(candidate, &st) == 0 else { throw APIError.notFound("No such file or directory: \(relative)") }
        guard let r = real(candidate) else { throw APIError.notFound("No such file or directory: \(relative)") }
        guard isInside(r, root: root) else {
            throw APIError.forbidden("\(relative) leads outside the project (symlink)")
        }
        return r
    }

    /// A path where a new entry may be created inside `root`: the parent must exist inside it.
    public static func resolveForCreate(root: String, relative: String, field: String = "path") throws -> String {
        let segs = try segments(relative, field: field)
        guard let name = segs.last else { throw APIError.validation("\(field) names no file", field: field) }
        let parent = try resolve(root: root, relative: segs.dropLast().joined(separator: "/"), field: field)
        let target = parent + "/" + name
        var st = stat()
        if lstat(target, &st) == 0, (st.st_mode & S_IFMT) == S_IFLNK {
            guard let r = real(target), isInside(r, root: root) else {
                throw APIError.forbidden("\(relative) leads outside the project (symlink)")
            }
            return r
        }
        return target
    }

    /// Whether openat2 (Linux 5.6) works here. Without it (an older kernel, a seccomp filter that
    /// refuses it) `openRoot` gives -1 and callers use paths, checked as before.
    public static let canOpenBeneath: Bool = {
        let root = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard root >= 0 else { return false }
        defer { close(root) }
        let fd = kiln_open_beneath(root, ".", O_RDONLY | O_DIRECTORY)
        if fd >= 0 { close(fd) }
        return fd >= 0
    }()

    /// The folder `root` opened for `openBeneath`, or -1 where openat2 is missing (or it cannot be opened).
    public static func openRoot(_ root: String) -> Int32 {
        canOpenBeneath ? open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1
    }

    /// Opens `relative` ("" for the folder itself; no "..") beneath the open folder `rootFD`, through
    /// no symlink at all, the last component included: a folder swapped for a link after a path was
    /// checked cannot lead out. -1 with errno, ELOOP or EXDEV for a link on the way.
    public static func openBeneath(_ rootFD: Int32, _ relative: String, flags: Int32) -> Int32 {
        kiln_open_beneath(rootFD, relative.isEmpty ? "." : relative, flags)
    }
}
