import Foundation
import Glibc
import KilnCore
import KilnHTTP
import KilnStore

/// Reading a project's folders and files for the API: one directory level with git's view of
/// ignores and status, and a file (whole, as lines, or raw) opened beneath the project.
extension ProjectService {
    // MARK: Tree

    /// One directory level: git's view of ignores (and status) in a git repository when git is
    /// installed, the built-in matcher otherwise; `all` shows ignored entries too.
    func tree(_ root: String, project: Project, path: String, all: Bool) async throws -> [TreeEntry] {
        let dir = try SafePath.resolve(root: root, relative: path)
        let rel = dir == root ? "" : String(dir.dropFirst(root.count + 1))
        let listing = try Self.listDirectory(dir, root: root, rel: rel, path: path)
        let names = listing.keys
        let useGit = project.vcs == "git" && Git.installed
        var visible: Set<String>? = nil
        var status: [String: String] = [:]
        var matcher = GitIgnore()
        if useGit {
            let spec = rel.isEmpty ? "." : rel
            // Both at once: each starts a sandbox.
            async let listed = git.local(
                ["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", spec], root: root,
                owner: project.id, timeout: 60)
            async let changed = git.local(
                ["status", "--porcelain=v1", "-z", "--", spec], root: root, owner: project.id, timeout: 60)
            let (ls, st) = await (listed, changed)
            visible = ls.map { ls in
                Set(
                    ls.stdout.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.compactMap { full in
                        let tail =
                            rel.isEmpty
                            ? Substring(full) : (full.hasPrefix(rel + "/") ? full.dropFirst(rel.count + 1) : nil)
                        return tail.flatMap { $0.split(separator: "/", maxSplits: 1).first.map(String.init) }
                    })
            }
            if visible == nil { matcher = loadIgnores(root: root, rel: rel) }
            for item in st?.stdout.split(separator: 0) ?? [] {
                let s = String(decoding: item, as: UTF8.self)
                guard s.count > 3 else { continue }
                let code = String(s.prefix(2)).trimmingCharacters(in: .whitespaces)
                let file = String(s.dropFirst(3))
                let tail =
                    rel.isEmpty ? Substring(file) : (file.hasPrefix(rel + "/") ? file.dropFirst(rel.count + 1) : nil)
                if let first = tail.flatMap({ $0.split(separator: "/", maxSplits: 1).first.map(String.init) }) {
                    status[first] = status[first] == nil || status[first] == code ? code : "M"
                }
            }
        } else {
            matcher = loadIgnores(root: root, rel: rel)
        }
        var out: [TreeEntry] = []
        for name in names.sorted() {
            guard let st = listing[name] else { continue }
            let kind: String
            switch st.st_mode & S_IFMT {
            case S_IFDIR: kind = "dir"
            case S_IFLNK: kind = "symlink"
            case S_IFREG: kind = "file"
            default: continue
            }
            let childRel = rel.isEmpty ? name : rel + "/" + name
            let ignored: Bool
            if let visible {
                ignored = !visible.contains(name) && status[name] == nil
            } else {
                ignored = matcher.isIgnored(childRel, isDirectory: kind == "dir")
            }
            if ignored && !all { continue }
            out.append(
                TreeEntry(
                    name: name, path: childRel, type: kind, size: Int(st.st_size),
                    mtime: Date(timeIntervalSince1970: Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9),
                    gitStatus: useGit ? status[name] : nil, ignored: ignored))
        }
        return out.sorted { ($0.type == "dir" ? 0 : 1, $0.name) < ($1.type == "dir" ? 0 : 1, $1.name) }
    }

    /// The entries of the folder `dir` (`rel` in the project, resolved from the client's `path`) with
    /// their lstat, `.git` left out. Opened beneath the root through no symlink where openat2 exists,
    /// so a folder swapped for a link since it was resolved is refused. Names that are not UTF-8 are
    /// left out, as the walk leaves them out of the index: no path could name them back.
    static func listDirectory(_ dir: String, root: String, rel: String, path: String) throws -> [String: stat] {
        let rootFD = SafePath.openRoot(root)
        let fd =
            rootFD >= 0
            ? SafePath.openBeneath(rootFD, rel, flags: O_RDONLY | O_DIRECTORY)
            : open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        let failure = errno
        if rootFD >= 0 { close(rootFD) }
        guard fd >= 0 else {
            switch failure {
            case ENOTDIR: throw APIError.validation("path is not a directory", field: "path")
            case ELOOP, EXDEV: throw APIError.forbidden("\(path) leads outside the project (symlink)")
            default: throw APIError.notFound("No such directory: \(path)")
            }
        }
        guard let d = fdopendir(fd) else {
            close(fd)
            throw APIError.notFound("No such directory: \(path)")
        }
        defer { closedir(d) }
        var out: [String: stat] = [:]
        var st = stat()
        while let e = readdir(d) {
            let raw = withUnsafeBytes(of: e.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            guard let name = String(validating: raw, as: UTF8.self), name != ".", name != "..", name != ".git" else {
                continue
            }
            guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            out[name] = st
        }
        return out
    }

    /// The .gitignore files from the root down to `rel`.
    func loadIgnores(root: String, rel: String) -> GitIgnore {
        var g = GitIgnore()
        var base = ""
        var dirs = [""]
        for part in rel.split(separator: "/") {
            base = base.isEmpty ? String(part) : base + "/" + part
            dirs.append(base)
        }
        for d in dirs {
            let file = root + (d.isEmpty ? "" : "/" + d) + "/.gitignore"
            if let text = try? String(contentsOfFile: file, encoding: .utf8) { g.add(text, base: d) }
        }
        return g
    }

    // MARK: File

    func file(_ root: String, path: String, startLine: Int?, endLine: Int?, raw: Bool) throws -> FileContent {
        guard !path.isEmpty else { throw APIError.validation("path is required", field: "path") }
        let real = try SafePath.resolve(root: root, relative: path)
        var st = stat()
        guard stat(real, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw APIError.validation("path is not a file", field: "path")
        }
        let fd = try Self.openResolved(real, root: root, path: path, expecting: st)
        defer { close(fd) }
        let size = Int(st.st_size)
        let etag =
            "\"\(String(size, radix: 16))-\(String(Int(st.st_mtim.tv_sec), radix: 16))\(String(Int(st.st_mtim.tv_nsec), radix: 16))\""
        let ranged = startLine != nil || endLine != nil
        if (size > ProjectService.maxFileBytes && !ranged && !raw) || (raw && size > ProjectService.maxReadBytes) {
            let limit = raw ? ProjectService.maxReadBytes : ProjectService.maxFileBytes
            throw APIError(
                .payloadTooLarge, message: "The file is \(size) bytes; ask for a range with start_line/end_line",
                details: ["size": .int(size), "limit": .int(limit)])
        }
        let probe = Self.readUpTo(fd, 8192)
        // Binary: a NUL byte, or bytes that are not UTF-8, in the first 8 KiB.
        let binary = probe.contains(0) || !isUTF8Prefix(probe, truncated: probe.count == 8192 && size > 8192)
        if binary && !raw {
            return FileContent(
                path: path, size: size, etag: etag, binary: true, bytes: nil, startLine: nil, endLine: nil,
                totalLines: nil)
        }
        guard ranged && !raw else {
            // The whole file, as large as it was when the request came (it may have grown since).
            let bytes = probe + (probe.count < 8192 ? [] : Self.readUpTo(fd, max(0, size - probe.count)))
            return FileContent(
                path: path, size: size, etag: etag, binary: binary, bytes: bytes, startLine: nil, endLine: nil,
                totalLines: nil)
        }
        return try Self.lines(
            fd, first: probe, path: path, size: size, etag: etag, startLine: startLine, endLine: endLine)
    }

    /// Files read whole (raw) or sliced are held in memory up to this size.
    static let maxReadBytes = 64 * 1024 * 1024

    /// Lines `startLine...endLine` (1-based, clamped to the file) of the file open at `fd`, read in
    /// pieces from where `first` (its first bytes, read already) ends: only the slice is kept.
    static func lines(
        _ fd: Int32, first: [UInt8], path: String, size: Int, etag: String, startLine: Int?, endLine: Int?
    ) throws -> FileContent {
        let s = max(1, startLine ?? 1)
        let wantEnd = endLine ?? Int.max
        var line = 1
        var newlines = 0
        var last: UInt8? = nil
        var slice: [UInt8] = []
        var chunk = first
        while !chunk.isEmpty {
            chunk.withUnsafeBytes { buf in
                var at = 0
                while at < buf.count {
                    let rest = buf.count - at
                    let found = memchr(buf.baseAddress! + at, 10, rest).map {
                        buf.baseAddress!.distance(to: UnsafeRawPointer($0))
                    }
                    let end = found ?? buf.count
                    if line >= s && line <= wantEnd {
                        slice.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[at..<end]))
                        if found != nil { slice.append(10) }
                    }
                    if found != nil {
                        line += 1
                        newlines += 1
                    }
                    at = end + 1
                }
            }
            guard slice.count <= maxReadBytes else {
                throw APIError(
                    .payloadTooLarge, message: "The lines asked for are more than \(maxReadBytes) bytes; ask for fewer",
                    details: ["limit": .int(maxReadBytes)])
            }
            last = chunk.last ?? last
            chunk = readUpTo(fd, 1 << 20)
        }
        // Lines end in a newline; a last line without one counts too (an empty file is one empty line).
        let total = last == 10 ? newlines : newlines + 1
        if last != 10 && total >= s && total <= wantEnd { slice.append(10) }
        let e = min(total, endLine ?? total)
        guard s <= max(e, 1) else {
            throw APIError.validation("start_line must not be after end_line", field: "start_line")
        }
        return FileContent(
            path: path, size: size, etag: etag, binary: false, bytes: s <= e ? slice : [], startLine: s, endLine: e,
            totalLines: total)
    }

    /// Opens `real` (a real path inside `root`, as `SafePath.resolve` gave it, and `expected` its stat)
    /// for reading: beneath the root through no symlink where openat2 exists, so a folder swapped for
    /// a link since the path was resolved cannot lead out, and only while it is still that file.
    static func openResolved(_ real: String, root: String, path: String, expecting expected: stat) throws -> Int32 {
        var fd: Int32 = -1
        let rootFD = real.count > root.count + 1 ? SafePath.openRoot(root) : -1
        if rootFD >= 0 {
            fd = SafePath.openBeneath(
                rootFD, String(real.dropFirst(root.count + 1)), flags: O_RDONLY | O_NONBLOCK | O_NOCTTY)
            let failure = errno
            close(rootFD)
            if fd < 0 && (failure == ELOOP || failure == EXDEV) {
                throw APIError.forbidden("\(path) leads outside the project (symlink)")
            }
        } else {
            fd = open(real, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        }
        guard fd >= 0 else { throw APIError.notFound("Cannot read \(path)") }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_dev == expected.st_dev,
            st.st_ino == expected.st_ino
        else {
            close(fd)
            throw APIError.conflict("\(path) changed while it was read; try again")
        }
        return fd
    }

    /// Up to `count` bytes from `fd` (fewer at its end).
    static func readUpTo(_ fd: Int32, _ count: Int) -> [UInt8] {
        guard count > 0 else { return [] }
        return [UInt8](unsafeUninitializedCapacity: count) { buf, n in
            n = 0
            while n < count {
                let r = Glibc.read(fd, buf.baseAddress! + n, count - n)
                if r < 0 && errno == EINTR { continue }
                if r <= 0 { break }
                n += r
            }
        }
    }

    /// Valid UTF-8; when the probe was cut from a longer file, a character cut at its end is allowed.
    func isUTF8Prefix(_ b: [UInt8], truncated: Bool) -> Bool {
        // A probe cut short may end inside a character: allow up to three bytes of one.
        b.withUnsafeBytes { all in
            (0...(truncated ? 3 : 0)).contains { cut in
                b.count >= cut && Bytes.isValidUTF8(UnsafeRawBufferPointer(rebasing: all.dropLast(cut)))
            }
        }
    }
}
