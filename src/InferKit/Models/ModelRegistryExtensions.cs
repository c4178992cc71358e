namespace InferKit.Models;

/// <summary>Reading the registry as a whole.</summary>
internal static class ModelRegistryExtensions
{
    /// <summary>
    /// Every registered model's current description, in registration order. A model removed between listing the names
    /// and describing it is skipped.
    /// </summary>
    public static IEnumerable<ModelInfo> DescribeAll(this IModelRegistry registry)
    {
        foreach (var name in registry.ModelNames)
        {
            ModelInfo model;
            try
            {
                model = registry.GetModel(name);
            }
            catch (ModelNotFoundException)
            {
                continue;
            }

            yield return model;
        }
    }
}
