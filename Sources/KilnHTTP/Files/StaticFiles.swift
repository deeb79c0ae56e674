import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Serves a folder: MIME types, strong `ETag` + `If-None-Match` (304), `Last-Modified` +
/// `If-Modified-Since`, single `Range` (206/416), `Cache-Control` (`immutable` for content-hashed
/// names such as `app.3f2a9c01be.js`), a precompressed `<file>.gz` when the client accepts gzip,
/// no traversal or symlink escape, single-page apps under their own prefix (`pages`), and an SPA
/// fallback to `index.html` for unknown non-API paths.
public struct StaticFiles: Sendable {
    public let root: String
    /// Serve `index.html` for unknown GETs outside `apiPrefixes` that look like page loads.
    public var spaFallback: Bool
    public var apiPrefixes: Set<String>
    /// A first path segment that belongs to a single-page app: every GET under it serves that page
    /// (`["w": "workspace.html"]` makes `/w/…/file/a.swift` load the workspace app).
    public var pages: [String: String]
    /// Files up to this size are read at once; larger ones are streamed.
    public var inlineLimit = 1 << 20

    /// nil when `root` does not exist.
    public init?(
        root: String, spaFallback: Bool = true,
        apiPrefixes: Set<String> = ["api", "auth", "healthz", "readyz", "metrics"], pages: [String: String] = [:]
    ) {
        guard let real = realpath(root, nil) else { return nil }
        self.root = String(cString: real)
        free(real)
        self.spaFallback = spaFallback
        self.apiPrefixes = apiPrefixes
        self.pages = pages
    }

    /// A handler for `Router.fallback`.
    public var handler: Handler { { request, _ in try self.respond(request) } }

    public func respond(_ request: Request) throws -> Response {
        guard request.method == .GET || request.method == .HEAD else { throw HTTPError.notFound() }
        let segs = request.pathSegments
        for s in segs where s.hasPrefix(".") || s.contains("/") || s.contains("\\") {
            throw HTTPError.notFound()
        }
        if let first = segs.first, let page = pages[first], let file = try resolve([page]) {
            return try serve(file, request)
        }
        if let file = try resolve(segs) { return try serve(file, request) }
        // `/register` serves `register.html` (links in mails stay short).
        if let last = segs.last, !last.contains("."), let page = try resolve(segs.dropLast() + [last + ".html"]) {
            return try serve(page, request)
        }
        let isAPI = segs.first.map { apiPrefixes.contains($0) } ?? false
        let looksLikeAsset = segs.last.map { $0.contains(".") } ?? false
        if spaFallback && !isAPI && !looksLikeAsset, let index = try resolve(["index.html"]) {
            return try serve(index, request)
        }
        throw HTTPError.notFound("No such file")
    }

    struct FileInfo {
        let path: String
        let size: Int
        let mtime: timespec
    }

    /// The real path of the file for `segs` (directories give their index.html); 403 when a
    /// symlink leads outside the root.
    func resolve(_ segs: [String]) throws -> FileInfo? {
        var candidate = segs.isEmpty ? root : root + "/" + segs.joined(separator: "/")
        var st = stat()
        guard stat(candidate, &st) == 0 else { return nil }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            candidate += "/index.html"
            guard stat(candidate, &st) == 0 else { return nil }
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        guard let real = realpath(candidate, nil) else { return nil }
        let realPath = String(cString: real)
        free(real)
        guard realPath.hasPrefix(root + "/") else { throw HTTPError.forbidden("Path leaves the served folder") }
        return FileInfo(path: realPath, size: Int(st.st_size), mtime: st.st_mtim)
    }

    func serve(_ original: FileInfo, _ request: Request) throws -> Response {
        // A precompressed sibling answers a client that accepts gzip (not for ranges: those count
        // bytes of the original).
        var file = original
        var encoding: String? = nil
        let compressed = try? resolveSibling(original.path + ".gz", of: original)
        if let compressed, request.headers["Range"] == nil,
            StaticFiles.acceptsGzip(request.headers["Accept-Encoding"])
        {
            file = compressed
            encoding = "gzip"
        }
        let etag =
            "\"\(String(file.size, radix: 16))-\(String(Int(file.mtime.tv_sec), radix: 16))\(String(Int(file.mtime.tv_nsec), radix: 16))\""
        let lastModified = HTTPDate.format(epochSeconds: Int(file.mtime.tv_sec))
        var headers = HTTPHeaders()
        headers.add("Content-Type", StaticFiles.mimeType(for: original.path))
        if let encoding { headers.add("Content-Encoding", encoding) }
        if compressed != nil { headers.add("Vary", "Accept-Encoding") }
        headers.add("ETag", etag)
        headers.add("Last-Modified", lastModified)
        headers.add("Accept-Ranges", "bytes")
        headers.add("Cache-Control", StaticFiles.cacheControl(for: original.path))
        headers.add("X-Content-Type-Options", "nosniff")

        if let inm = request.headers["If-None-Match"] {
            let tags = inm.split(separator: ",").map { trimOWS($0) }
            if tags.contains("*") || tags.contains(where: { $0 == etag || $0 == "W/" + etag }) {
                return Response(status: .notModified, headers: headers)
            }
        } else if let ims = request.headers["If-Modified-Since"], let since = HTTPDate.parse(ims),
            Int(file.mtime.tv_sec) <= Int(since.timeIntervalSince1970)
        {
            return Response(status: .notModified, headers: headers)
        }

        var range: ClosedRange<Int>? = nil
        if request.method == .GET, let rh = request.headers["Range"] {
            var honour = true
            if let ifRange = request.headers["If-Range"], ifRange != etag && ifRange != lastModified { honour = false }
            if honour {
                switch StaticFiles.parseRange(rh, size: file.size) {
                case .none: break
                case .unsatisfiable:
                    throw HTTPError(
                        .rangeNotSatisfiable, message: "Range not satisfiable",
                        headers: ["Content-Range": "bytes */\(file.size)"])
                case .range(let r):
                    range = r
                }
            }
        }
        let start = range?.lowerBound ?? 0
        let length = range.map { $0.count } ?? file.size
        if let range { headers.add("Content-Range", "bytes \(range.lowerBound)-\(range.upperBound)/\(file.size)") }
        let status: HTTPStatus = range == nil ? .ok : .partialContent
        if request.method == .HEAD {
            headers.add("Content-Length", String(length))
            return Response(status: status, headers: headers, body: .stream { _ in })
        }
        if length <= inlineLimit {
            return Response(
                status: status, headers: headers,
                body: .bytes(try StaticFiles.read(file.path, offset: start, length: length)))
        }
        headers.add("Content-Length", String(length))
        let path = file.path
        return Response(
            status: status, headers: headers,
            body: .stream { writer in
                var offset = start
                let end = start + length
                while offset < end {
                    let chunk = try StaticFiles.read(path, offset: offset, length: min(256 * 1024, end - offset))
                    if chunk.isEmpty { throw ConnectionClosedError() }
                    try await writer.write(chunk)
                    offset += chunk.count
                }
            })
    }

    /// The `.gz` beside a resolved file, if it is a regular file inside the root and not older than
    /// the original (a file edited after compressing is served as it is now, never the stale copy).
    func resolveSibling(_ path: String, of original: FileInfo) throws -> FileInfo? {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, path.hasPrefix(root + "/") else { return nil }
        let older =
            st.st_mtim.tv_sec < original.mtime.tv_sec
            || (st.st_mtim.tv_sec == original.mtime.tv_sec && st.st_mtim.tv_nsec < original.mtime.tv_nsec)
        return older ? nil : FileInfo(path: path, size: Int(st.st_size), mtime: st.st_mtim)
    }

    /// Pages are revalidated each time; a name carrying a content hash (`name.<8+ hex>.ext`) never
    /// changes, so browsers keep it for a year without asking.
    static func cacheControl(for path: String) -> String {
        if path.hasSuffix(".html") { return "no-cache" }
        let name = path.split(separator: "/").last.map(String.init) ?? path
        let parts = name.split(separator: ".")
        if parts.count >= 3,
            parts.dropFirst().dropLast().contains(where: { p in
                p.count >= 8 && p.allSatisfy { $0.isHexDigit && !$0.isUppercase }
            })
        {
            return "public, max-age=31536000, immutable"
        }
        return "public, max-age=3600"
    }

    /// Whether `Accept-Encoding` allows gzip (`gzip` or `*` without `q=0`).
    static func acceptsGzip(_ header: String?) -> Bool {
        guard let header else { return false }
        var gzip: Bool? = nil
        var star = false
        for item in header.split(separator: ",") {
            let fields = item.split(separator: ";").map { trimOWS($0).lowercased() }
            guard let coding = fields.first else { continue }
            let zero = fields.dropFirst().contains { f in
                f.hasPrefix("q=") && (Double(f.dropFirst(2)) ?? 1) == 0
            }
            if coding == "gzip" || coding == "x-gzip" { gzip = !zero } else if coding == "*" { star = !zero }
        }
        return gzip ?? star
    }

    static func read(_ path: String, offset: Int, length: Int) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw HTTPError.notFound("No such file") }
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: length)
        var done = 0
        while done < length {
            let n = out.withUnsafeMutableBytes {
                pread(fd, $0.baseAddress! + done, length - done, off_t(offset + done))
            }
            if n <= 0 { break }
            done += n
        }
        if done < length { out.removeLast(length - done) }
        return out
    }

    enum RangeResult: Equatable { case none, unsatisfiable, range(ClosedRange<Int>) }

    /// One `bytes=` range (first-last, first-, -suffix). Several ranges are answered in full.
    static func parseRange(_ header: String, size: Int) -> RangeResult {
        let h = trimOWS(Substring(header))
        guard h.hasPrefix("bytes=") else { return .none }
        let spec = h.dropFirst(6)
        if spec.contains(",") { return .none }
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return .none }
        let a = trimOWS(parts[0])
        let b = trimOWS(parts[1])
        if a.isEmpty {
            guard let suffix = Int(b), suffix >= 0 else { return .none }
            if suffix == 0 || size == 0 { return .unsatisfiable }
            return .range(max(0, size - suffix)...(size - 1))
        }
        guard let first = Int(a), first >= 0 else { return .none }
        if first >= size { return .unsatisfiable }
        if b.isEmpty { return .range(first...(size - 1)) }
        guard let last = Int(b), last >= first else { return .none }
        return .range(first...min(last, size - 1))
    }

    static let mime: [String: String] = [
        "html": "text/html; charset=utf-8", "htm": "text/html; charset=utf-8", "css": "text/css; charset=utf-8",
        "js": "text/javascript; charset=utf-8", "mjs": "text/javascript; charset=utf-8", "json": "application/json",
        "map": "application/json", "txt": "text/plain; charset=utf-8", "md": "text/markdown; charset=utf-8",
        "svg": "image/svg+xml", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
        "webp": "image/webp", "ico": "image/x-icon", "avif": "image/avif", "woff": "font/woff", "woff2": "font/woff2",
        "ttf": "font/ttf", "otf": "font/otf", "wasm": "application/wasm", "pdf": "application/pdf",
        "xml": "application/xml", "webmanifest": "application/manifest+json", "mp4": "video/mp4", "webm": "video/webm",
        "zip": "application/zip", "gz": "application/gzip", "csv": "text/csv; charset=utf-8",
    ]

    public static func mimeType(for path: String) -> String {
        guard let dot = path.lastIndex(of: "."), !path[dot...].contains("/") else { return "application/octet-stream" }
        return mime[path[path.index(after: dot)...].lowercased()] ?? "application/octet-stream"
    }
}
