import Foundation
import KilnCore
import KilnHTTP
import KilnStore

public enum BudgetPermission {
    public static let read = Permission(
        "budget:read", "See cost estimates, the usage ledger and the caps", minimumRole: .viewer)
    public static let manage = Permission("budget:manage", "Set the workspace's budget caps", minimumRole: .admin)
}

/// Budget: what agent runs cost before (estimates) and after (the ledger), and the caps.
public struct BudgetModule: KilnModule {
    public let name = "budget"
    /// The ledger and caps; the application hands it to agent runs as a `RunObserver`.
    public let service: BudgetService

    /// `tools`: the built-in agent tools (their size counts in every estimate).
    public init(services: Services, projects: any ProjectDirectory, tools: any ToolCatalog) {
        service = BudgetService(services: services, projects: projects, tools: tools)
        services.hooks.onWorkspaceDeleted { [store = service.store] tx, ws in try store.purgeWorkspace(tx, ws) }
    }

    public var migrations: [Migration] { BudgetMigrations.all }
    public var permissions: [Permission] { [BudgetPermission.read, BudgetPermission.manage] }
    public static var configOptions: [Config.Option] { [PriceTable.option] }

    public func register(_ routes: Routes) { BudgetRoutes(budget: service).register(routes) }
}
