import Foundation
import KilnHTTP
import KilnStore
import Synchronization

/// A domain module: its tables, its permissions and its routes. Adding a domain is a folder,
/// a target line in Package.swift, and one entry in the app's module list.
public protocol KilnModule: Sendable {
    var name: String { get }
    var migrations: [Migration] { get }
    /// The permissions this module's routes use, with the lowest role that holds each.
    var permissions: [PermissionGrant] { get }
    func register(_ routes: Routes, _ services: Services)
}

extension KilnModule {
    public var migrations: [Migration] { [] }
    public var permissions: [PermissionGrant] { [] }
}

public struct PermissionGrant: Sendable {
    public let permission: Permission
    public let minimumRole: Role
    public init(_ name: String, _ description: String, minimumRole: Role = .viewer, workspaceScoped: Bool = true) {
        permission = Permission(name, description, workspaceScoped: workspaceScoped)
        self.minimumRole = minimumRole
    }
}

/// What every module may use.
public struct Services: Sendable {
    public let config: Config
    public let db: Database
    public let clock: any Clock
    public let bus: EventBus
    public let jobs: JobRunner
    public let dataDir: String
    /// 32 bytes that wrap per-secret data keys (never logged).
    public let masterKey: [UInt8]
    public let hooks: Hooks
    public let catalog: PermissionCatalog
    public let mailer: any Mailer
    public let templates: MailTemplates
    /// The externally visible base URL for links in mails (set once the port is known).
    public let baseURL: BaseURL

    public init(config: Config, db: Database, clock: any Clock, bus: EventBus, jobs: JobRunner, dataDir: String, masterKey: [UInt8],
                hooks: Hooks, catalog: PermissionCatalog, mailer: any Mailer, templates: MailTemplates, baseURL: BaseURL) {
        self.config = config; self.db = db; self.clock = clock; self.bus = bus; self.jobs = jobs
        self.dataDir = dataDir; self.masterKey = masterKey; self.hooks = hooks; self.catalog = catalog
        self.mailer = mailer; self.templates = templates; self.baseURL = baseURL
    }
}

/// The base URL links point to; known only after the server has bound its port.
public final class BaseURL: Sendable {
    private let value: Mutex<String>
    public init(_ v: String) { value = Mutex(v) }
    public var string: String { value.withLock { $0 } }
    public func set(_ v: String) { value.withLock { $0 = v } }
}

/// OpenAPI facts a route declares besides its permission.
public struct RouteDoc: Sendable {
    public var method: String
    public var path: String
    public var permission: String
    public var summary: String
    public var tags: [String]
    /// Query parameters: name → (description, required).
    public var query: [(name: String, description: String, required: Bool)]
    /// JSON schema of the request body (nil: no body).
    public var requestBody: JSONValue?
    /// Success status and JSON schema of its body (nil schema: described only).
    public var successStatus: Int
    public var responseBody: JSONValue?
    public var responseContentType: String

    public init(method: String, path: String, permission: String, summary: String, tags: [String] = [],
                query: [(name: String, description: String, required: Bool)] = [], requestBody: JSONValue? = nil,
                successStatus: Int = 200, responseBody: JSONValue? = nil, responseContentType: String = "application/json") {
        self.method = method; self.path = path; self.permission = permission; self.summary = summary; self.tags = tags
        self.query = query; self.requestBody = requestBody; self.successStatus = successStatus
        self.responseBody = responseBody; self.responseContentType = responseContentType
    }
}

/// The registration surface modules see: every route states its permission and is documented.
public final class Routes: @unchecked Sendable {
    public let router: Router
    public private(set) var docs: [RouteDoc] = []

    public init(router: Router) { self.router = router }

    public func add(_ method: HTTPMethod, _ path: String, permission: String, summary: String, tags: [String] = [],
                    query: [(name: String, description: String, required: Bool)] = [], requestBody: JSONValue? = nil,
                    successStatus: Int = 200, responseBody: JSONValue? = nil, responseContentType: String = "application/json",
                    bodyLimit: Int? = nil, streamBody: Bool = false, _ handler: @escaping Handler) {
        router.on(method, path, RouteMetadata(permission: permission, bodyLimit: bodyLimit, streamBody: streamBody,
                                              summary: summary, tags: tags), handler)
        docs.append(RouteDoc(method: method.rawValue, path: path, permission: permission, summary: summary, tags: tags,
                             query: query, requestBody: requestBody, successStatus: successStatus, responseBody: responseBody,
                             responseContentType: responseContentType))
    }
}
