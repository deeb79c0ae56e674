import Foundation
import KilnCore
import KilnHTTP
import KilnStore

public enum BrowserPermission {
    public static let read = Permission(
        "browser:read", "See the workspace's browser runs, their screenshots and its allowlist", minimumRole: .viewer)
    public static let run = Permission(
        "browser:run", "Run headless Chromium against the allowed origins", minimumRole: .member, execution: true)
    public static let manage = Permission(
        "browser:manage", "Change which origins the workspace's browser runs may load", minimumRole: .admin)
}

/// Browser runs: smoke, flow and marketing checks of a page in headless Chromium driven over the
/// DevTools protocol, within a per-workspace allowlist.
public struct BrowserModule: KilnModule {
    public let name = "browser"
    public let service: BrowserService

    public init(services: Services, secrets: (any SecretProvider)? = nil) {
        service = BrowserService(services: services, secrets: secrets)
        let s = service
        services.hooks.workspaceOf(param: "browser_run_id") { id in try await s.workspaceOfRun(id) }
        services.hooks.onWorkspaceDeleted { tx, ws in try s.store.purgeWorkspace(tx, ws) }
        services.instances.onRecover("browser") { alive in try await s.recover(alive: alive) }
    }

    public var migrations: [Migration] { BrowserMigrations.all }
    public static var configOptions: [Config.Option] { BrowserService.options }
    public var permissions: [Permission] { [BrowserPermission.read, BrowserPermission.run, BrowserPermission.manage] }

    public func register(_ routes: Routes) { BrowserRoutes(browser: service).register(routes) }

    public func start(_ jobs: JobRunner) throws {
        let s = service
        s.instances.everyOnce(jobs, 3600, name: "old browser screenshots") {
            try await s.purgeScreenshots(endedBefore: s.clock.now().addingTimeInterval(-s.keepSeconds))
        }
    }

    public func shutdown() async { await service.stopAll() }
}
