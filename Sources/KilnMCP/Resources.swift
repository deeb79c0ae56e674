import Foundation
import KilnCore
import KilnHTTP

/// Project files as MCP resources: `kiln://<project_id>/<path>`, listed a page at a time from the
/// projects of the caller's workspace and read beneath the project through no symlink.
extension MCPServerService {
    static let resourcePage = 200
    static let maxResourceBytes = 5 << 20

    /// One page of resources; the cursor names the project and the offset within its paths.
    func resources(cursor: String?, _ p: Principal) async throws -> [String: JSONValue] {
        var projectIndex = 0
        var offset = 0
        if let cursor {
            guard let raw = PageRequest.decodeCursor(cursor), case let parts = raw.split(separator: ":"),
                parts.count == 2, let pi = Int(parts[0]), let off = Int(parts[1]), pi >= 0, off >= 0
            else { throw RPCError.invalidParams("Unknown cursor") }
            (projectIndex, offset) = (pi, off)
        }
        let wsID = try await rpc { try await self.toolbox.workspace(nil, p) }
        _ = try await rpc { try await self.toolbox.authorizer.access(p, "project:read", wsID: wsID) }
        let projects = try await toolbox.projects.projects(wsID: wsID)
        var items: [JSONValue] = []
        var next: String? = nil
        while projectIndex < projects.count {
            let project = projects[projectIndex]
            let paths = try await toolbox.projects.indexedPaths(project)
            let room = Self.resourcePage - items.count
            let slice = paths.dropFirst(offset).prefix(room)
            for path in slice {
                items.append([
                    "uri": .string(Self.uri(project.id, path)), "name": .string(path),
                    "title": .string("\(project.name): \(path)"), "mimeType": .string(Self.mimeType(path)),
                ])
            }
            if offset + slice.count < paths.count {
                next = PageRequest.encodeCursor("\(projectIndex):\(offset + slice.count)")
                break
            }
            projectIndex += 1
            offset = 0
            if items.count >= Self.resourcePage {
                if projectIndex < projects.count { next = PageRequest.encodeCursor("\(projectIndex):0") }
                break
            }
        }
        var out: [String: JSONValue] = ["resources": .array(items)]
        if let next { out["nextCursor"] = .string(next) }
        return out
    }

    /// A project file's contents: text when it is UTF-8, else base64.
    func readResource(_ uri: String, _ p: Principal) async throws -> JSONValue {
        let notFound = RPCError(code: -32002, message: "Resource not found", data: ["uri": .string(uri)])
        guard uri.hasPrefix("kiln://"), uri.utf8.count <= 4096 else { throw notFound }
        let rest = uri.dropFirst("kiln://".count)
        guard let slash = rest.firstIndex(of: "/") else { throw notFound }
        let projectID = String(rest[..<slash])
        guard let path = String(rest[rest.index(after: slash)...]).removingPercentEncoding, !path.isEmpty else {
            throw notFound
        }
        let project: ProjectRef
        do { (project, _) = try await toolbox.project(projectID, "project:read", p) } catch { throw notFound }
        let bytes: [UInt8]
        do {
            guard let b = try SafePath.readBeneath(root: project.root, relative: path, max: Self.maxResourceBytes)
            else {
                throw notFound
            }
            bytes = b
        } catch let e as HTTPError {
            throw RPCError.invalidParams(e.message)
        }
        if !bytes.prefix(8000).contains(0), let text = String(validating: bytes, as: UTF8.self) {
            return ["uri": .string(uri), "mimeType": .string(Self.mimeType(path)), "text": .string(text)]
        }
        return [
            "uri": .string(uri), "mimeType": "application/octet-stream",
            "blob": .string(Data(bytes).base64EncodedString()),
        ]
    }

    static func uri(_ projectID: String, _ path: String) -> String {
        let allowed = CharacterSet.urlPathAllowed.subtracting(CharacterSet(charactersIn: "?#"))
        return "kiln://\(projectID)/" + (path.addingPercentEncoding(withAllowedCharacters: allowed) ?? path)
    }

    static func mimeType(_ path: String) -> String {
        switch (path as NSString).pathExtension.lowercased() {
        case "md": "text/markdown"
        case "json": "application/json"
        case "html", "htm": "text/html"
        case "png": "image/png"
        case "jpg", "jpeg": "image/jpeg"
        case "svg": "image/svg+xml"
        case "pdf": "application/pdf"
        default: "text/plain"
        }
    }

    /// Access refusals inside a protocol method are JSON-RPC errors with the reason.
    func rpc<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let e as any HTTPResponseError {
            throw RPCError(code: MCPWire.invalidParams, message: e.message)
        }
    }
}
