using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

namespace InferKit.Tests.Backends;

/// <summary>A plain <see cref="ServiceCollection"/> with fake logging and InferKit over real ONNX Runtime sessions.</summary>
internal static class OnnxTestServices
{
    /// <summary>Builds a provider whose models are registered by <paramref name="register"/>; logs go to a <see cref="FakeLogCollector"/>.</summary>
    public static ServiceProvider Build(Action<IInferKitBuilder> register)
    {
        var services = new ServiceCollection();
        services.AddLogging(b => b.AddFakeLogging().SetMinimumLevel(LogLevel.Debug));
        register(services.AddInferKit());
        return services.BuildServiceProvider(new ServiceProviderOptions { ValidateOnBuild = true, ValidateScopes = true });
    }

    public static IInferenceClient Client(this IServiceProvider services) => services.GetRequiredService<IInferenceClient>();

    public static InferKit.Models.IModelRegistry Registry(this IServiceProvider services) => services.GetRequiredService<InferKit.Models.IModelRegistry>();

    /// <summary>Maps the test models' ONNX element type to InferKit's.</summary>
    public static TensorElementType ToInferKit(this OnnxElementType type) => type switch
    {
        OnnxElementType.Float => TensorElementType.Float32,
        OnnxElementType.Float16 => TensorElementType.Float16,
        OnnxElementType.BFloat16 => TensorElementType.BFloat16,
        OnnxElementType.Double => TensorElementType.Float64,
        OnnxElementType.Int8 => TensorElementType.Int8,
        OnnxElementType.Int16 => TensorElementType.Int16,
        OnnxElementType.Int32 => TensorElementType.Int32,
        OnnxElementType.Int64 => TensorElementType.Int64,
        OnnxElementType.UInt8 => TensorElementType.UInt8,
        OnnxElementType.UInt16 => TensorElementType.UInt16,
        OnnxElementType.UInt32 => TensorElementType.UInt32,
        OnnxElementType.UInt64 => TensorElementType.UInt64,
        OnnxElementType.Bool => TensorElementType.Bool,
        OnnxElementType.String => TensorElementType.String,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
    };

    /// <summary>Asserts that two float sequences are equal within an absolute tolerance, naming the first bad index.</summary>
    public static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            if (!(Math.Abs(expected[i] - actual[i]) <= tolerance))
            {
                Assert.Fail($"{what}[{i}]: expected {expected[i]} but got {actual[i]} (tolerance {tolerance}).");
            }
        }
    }
}
