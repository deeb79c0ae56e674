import Foundation
import KilnCore
import KilnHTTP
import KilnStore

public enum NotebookPermission {
    public static let read = Permission(
        "notebook:read", "Open the workspace's notebooks and read their cells and outputs", minimumRole: .viewer)
    public static let write = Permission(
        "notebook:write", "Create notebooks and add, change, move and remove their cells", minimumRole: .member)
    public static let run = Permission(
        "notebook:run", "Run notebook cells on a kernel in the project's sandbox", minimumRole: .member,
        execution: true)
}

/// Notebooks: Jupyter `.ipynb` files in a project, edited cell by cell (the file stays a plain
/// notebook that JupyterLab, VS Code and nbconvert open unchanged).
public struct NotebooksModule: KilnModule {
    public let name = "notebooks"
    /// The notebooks; agent runs use them as `NotebookCells`.
    public let service: NotebookService

    public init(services: Services, projects: any ProjectDirectory, policy: (any PolicyEngine)? = nil) {
        service = NotebookService(services: services, projects: projects, policy: policy)
        let s = service
        services.hooks.workspaceOf(param: "nb_id") { id in try await s.workspaceOf(id) }
        services.instances.onRecover("notebooks") { alive in try await s.store.releaseKernels(notHeldBy: alive) }
    }

    public var migrations: [Migration] { NotebookMigrations.all }
    public static var configOptions: [Config.Option] { NotebookRunner.options }

    public func start(_ jobs: JobRunner) throws {
        let runner = service.runner
        jobs.every(60, name: "reap idle notebook kernels") { await runner.reap() }
    }

    /// Every kernel is shut down.
    public func shutdown() async { await service.runner.stopAll() }
    public var permissions: [Permission] {
        [NotebookPermission.read, NotebookPermission.write, NotebookPermission.run]
    }

    public func register(_ routes: Routes) { NotebookRoutes(notebooks: service).register(routes) }
}
